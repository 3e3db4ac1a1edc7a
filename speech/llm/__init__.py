"""The chat-completions relay's parts that know nothing of keys or billing.

The edge (:mod:`speech.api.chat`) authenticates, validates, reserves credit
and answers; these modules speak to the upstreams:

* :mod:`.providers`: the provider table (base URL, key, model prefixes) and
  the seed's validation errors;
* :mod:`.upstream`: one pooled httpx client, the one retry on a connection
  failure, timeouts, plain answers and server-sent-event streams;
* :mod:`.sse`: a Sans-I/O SSE parser and what one chunk says (usage, text);
* :mod:`.error_map`: upstream HTTP statuses and transport failures as
  :mod:`speech.errors`;
* :mod:`.estimate`: the documented token estimate used to size reservations
  and to bill when an upstream reports no usage.

Every provider speaks the OpenAI Chat Completions protocol (Gemini through
its OpenAI-compatible endpoint, Ollama through ``/v1``), so there is one
client for all of them.
"""
