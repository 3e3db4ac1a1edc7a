# The gateway on its embedded engines. Not built in the project's CI (no Docker
# engine there); see the README's Docker section.
FROM python:3.11-slim

# libgomp: OpenMP runtime used by CTranslate2 (faster-whisper) and onnxruntime (piper).
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY speech ./speech
RUN pip install --no-cache-dir '.[local,cloud]'

# MALLOC_ARENA_MAX: glibc otherwise keeps one malloc arena per thread (the
# inference and encoder threads), and resident memory wanders by tens of MB.
ENV SPEECH_HOST=0.0.0.0 \
    SPEECH_PORT=8080 \
    SPEECH_DB=/data/speech.db \
    MALLOC_ARENA_MAX=2
VOLUME /data
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz').status != 200)"
CMD ["speech", "serve"]
