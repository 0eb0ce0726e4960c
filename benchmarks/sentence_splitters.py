"""Which sentence segmenter serves each of Bark's languages: scored on the test paragraphs.

For every language in tests/language_samples.py, each candidate segmenter (nltk Punkt with its
pretrained parameters where it has some, sentencex, pysbd where it knows the language, the
punctuation regex) splits the paragraph; a candidate scores when its sentences are exactly the
expected ones. `ours` is model_server.generation.sentences (the segmenter SEGMENTER_OF picks, plus its two rules).

Usage: ``python benchmarks/sentence_splitters.py`` (CPU only, a second).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model_server.generation import sentences  # noqa: E402
from tests.language_samples import SENTENCES, paragraph  # noqa: E402

CANDIDATES = ("punkt", "sentencex", "pysbd")


def main() -> None:
    totals = dict.fromkeys([*CANDIDATES, "regex", "ours"], 0)
    known = dict.fromkeys(totals, 0)
    print(f"{'lang':5} {'punkt':10} {'sentencex':10} {'pysbd':10} {'regex':10} {'ours':10} chosen")
    for code, expected in SENTENCES.items():
        text = paragraph(code)
        row = []
        for name in CANDIDATES:
            splitter = sentences._FACTORIES[name](code) if name != "pysbd" or _pysbd_knows(code) else None
            if splitter is None:
                row.append("-")
                continue
            ok = [s.strip() for s in splitter(text) if s.strip()] == expected
            totals[name] += ok
            known[name] += 1
            row.append("ok" if ok else "wrong")
        for name, got in (
            ("regex", sentences.regex_split_sentences(text)),
            ("ours", sentences.split_sentences(text, code)),
        ):
            ok = got == expected
            totals[name] += ok
            known[name] += 1
            row.append("ok" if ok else "wrong")
        print(f"{code:5} " + " ".join(f"{cell:10}" for cell in row) + f" {sentences.SEGMENTER_OF[code]}")
    print("right: " + ", ".join(f"{name} {totals[name]}/{known[name]}" for name in totals))


def _pysbd_knows(code: str) -> bool:
    from pysbd.languages import LANGUAGE_CODES

    return code in LANGUAGE_CODES


if __name__ == "__main__":
    main()
