"""``speech say "text" -o out.wav``: synthesize with the local engine, no server needed."""

from __future__ import annotations

from pathlib import Path

from speech.audio.encode import encode, parse_output_format
from speech.settings import Settings

BY_EXTENSION = {".wav": "wav_22050", ".mp3": "mp3_44100_128", ".pcm": "pcm_22050", ".ogg": "opus_48000_64"}


def say(text: str, output: str, fmt_name: str | None, settings: Settings) -> int:
    from speech.providers.local.tts import PiperSynthesizer

    if not text.strip():
        print("speech: nothing to say: the text is empty")
        return 2
    path = Path(output)
    name = fmt_name or BY_EXTENSION.get(path.suffix.lower(), "wav_22050")
    fmt = parse_output_format(name)
    synth = PiperSynthesizer(settings.local)
    try:
        pcm = synth.synthesize_pcm(text)
        path.write_bytes(encode(pcm, synth.sample_rate, fmt))
    finally:
        synth.close()
    print(f"wrote {path} ({fmt.name}, {len(pcm) / 2 / synth.sample_rate:.2f} s)")
    return 0
