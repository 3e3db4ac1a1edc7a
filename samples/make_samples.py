"""Regenerate the project's own sample recordings with its local TTS engine.

    python samples/make_samples.py

Each file is Piper speech (voice en_US-joe-medium) padded with silence, so the
VAD has something to cut; `manifest.json` lists the text of each. The files
are small and committed, so tests and the README's first-run example need no
extra step.
"""

from __future__ import annotations

import json
from pathlib import Path

from speech.audio.encode import encode, parse_output_format
from speech.providers.local.tts import PiperSynthesizer
from speech.settings import load_settings

HERE = Path(__file__).resolve().parent

SAMPLES = [
    # file, format, sentences (each becomes one utterance, 1 s of silence between)
    ("hello_robot.wav", "wav_16000", ["Hello robot, please turn left and walk to the kitchen door."]),
    ("pick_up_cup.wav", "wav_22050", ["Pick up the red cup from the table and bring it to me."]),
    ("two_commands.wav", "wav_16000", ["Stop right there.", "Now go back to your charging station."]),
    ("weather_48k.wav", "wav_48000", ["What is the weather going to be like tomorrow morning?"]),
]


def main() -> None:
    synth = PiperSynthesizer(load_settings(environ={}).local)
    rate = synth.sample_rate
    manifest = []
    for name, fmt_name, sentences in SAMPLES:
        pad = b"\x00\x00" * (rate // 2)
        gap = b"\x00\x00" * rate
        pcm = pad + gap.join(synth.synthesize_pcm(s) for s in sentences) + pad
        fmt = parse_output_format(fmt_name)
        (HERE / name).write_bytes(encode(pcm, rate, fmt))
        manifest.append(
            {
                "file": name,
                "sample_rate": fmt.sample_rate,
                "seconds": round(len(pcm) / 2 / rate, 3),
                "utterances": sentences,
                "transcript": " ".join(sentences),
                "source": "synthesized by this project with piper-tts, voice en_US-joe-medium",
            }
        )
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    synth.close()


if __name__ == "__main__":
    main()
