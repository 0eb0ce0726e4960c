"""Build a randomly initialised Bark checkpoint of the real architecture, offline.

Real Bark weights live on the Hugging Face hub, which tests, CI and the offline demo cannot reach.
This builder writes a checkpoint that loads through exactly the same code path as `suno/bark-small`:
`BarkModel.from_pretrained` + `BarkProcessor.from_pretrained`, with a `generation_config.json`, a
locally built BERT WordPiece tokenizer and voice presets in the hub's `speaker_embeddings/` layout.

Sizes:
- `tiny`  (default): a few hundred kB per sub-model, for tests and the CPU demo;
- `small`: the exact shapes of `suno/bark-small` (for benchmarks);
- `large`: the exact shapes of `suno/bark` (for benchmarks).

Random weights make noise, and they (almost) never emit end-of-sequence on their own: each chunk
then runs to its semantic token budget (see `Settings.semantic_tokens_per_word`), so chunks of
different word counts in one batch end at different lengths, which is what trimming must handle.

Usage: ``python -m model_server.tiny OUT_DIR [--size tiny|small|large] [--seed N]``
"""

from __future__ import annotations

import argparse
import json
import logging
import string
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model_server.generation.languages import LANGUAGES

logger = logging.getLogger(__name__)

#: Voice presets written by the builder: the hub's v2 names, ten speakers in each of Bark's 13 languages
#: (English first, so its presets keep the contents they had when they were the only ones).
TINY_VOICE_PRESETS = tuple(
    f"v2/{code}_speaker_{i}" for code in sorted(LANGUAGES, key=lambda code: (code != "en", code)) for i in range(10)
)

# Bark's token layout (identical for bark-small and bark); the generation config refers to these.
SEMANTIC_VOCAB_SIZE = 10_000
TEXT_ENCODING_OFFSET = 10_048
SEMANTIC_INPUT_VOCAB = 129_600
SEMANTIC_OUTPUT_VOCAB = 10_048
COARSE_VOCAB = 12_096
FINE_VOCAB = 1_056
CODEBOOK_SIZE = 1_024
N_FINE_CODEBOOKS = 8

SIZES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 32, "num_layers": 2, "num_heads": 2},
    "small": {"hidden_size": 768, "num_layers": 12, "num_heads": 12},
    "large": {"hidden_size": 1024, "num_layers": 24, "num_heads": 16},
}

#: EnCodec: the real 24 kHz codec for small/large; a narrow one of the same frame rate (75 Hz) for tiny.
CODEC_OVERRIDES: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_size": 16, "num_filters": 4, "num_lstm_layers": 1, "codebook_dim": 16},
    "small": {},
    "large": {},
}

#: Common English words become whole WordPiece tokens; anything else falls back to characters.
_COMMON_WORDS = (
    "the of and to a in is it you that he was for on are with as his they be at one have this from "
    "or had by hot word but what some we can out other were all there when up use your how said an "
    "each she which do their time if will way about many then them write would like so these her long "
    "make thing see him two has look more day could go come did number sound no most people my over "
    "know water than call first who may down side been now find any new work part take get place made "
    "live where after back little only round man year came show every good me give our under name very "
    "through just form sentence great think say help low line differ turn cause much mean before move "
    "right boy old too same tell does set three want air well also play small end put home read hand "
    "port large spell add even land here must big high such follow act why ask men change went light "
    "kind off need house picture try us again animal point mother world near build self earth father "
    "hello speech audio voice model server text fast bark"
).split()


def build_vocab() -> list[str]:
    """A WordPiece vocabulary: special tokens, characters, continuation characters, common words."""
    chars = list(string.ascii_letters + string.digits + string.punctuation) + list("äöüßéèêàçñ’“”—…")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += chars
    vocab += [f"##{c}" for c in chars]
    vocab += [w for w in dict.fromkeys(_COMMON_WORDS) if w not in vocab]
    return vocab


def _write_tokenizer(out_dir: Path) -> None:
    from transformers import BertTokenizer

    vocab = {token: index for index, token in enumerate(build_vocab())}
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=False, model_max_length=256)
    tokenizer.save_pretrained(out_dir)


def _write_voice_presets(out_dir: Path, seed: int) -> None:
    """Write presets in the hub layout: speaker_embeddings_path.json + speaker_embeddings/v2/*.npy."""
    index: dict[str, Any] = {"repo_or_path": str(out_dir)}
    for number, preset in enumerate(TINY_VOICE_PRESETS):
        rng = np.random.default_rng(seed * 1000 + number)
        n_semantic = int(rng.integers(120, 240))
        n_acoustic = round(n_semantic * 75 / 49.9)
        arrays = {
            "semantic_prompt": rng.integers(0, SEMANTIC_VOCAB_SIZE, size=n_semantic, dtype=np.int64),
            "coarse_prompt": rng.integers(0, CODEBOOK_SIZE, size=(2, n_acoustic), dtype=np.int64),
            "fine_prompt": rng.integers(0, CODEBOOK_SIZE, size=(N_FINE_CODEBOOKS, n_acoustic), dtype=np.int64),
        }
        entry = {}
        for key, array in arrays.items():
            relative = f"speaker_embeddings/{preset}_{key}.npy"
            target = out_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            np.save(target, array, allow_pickle=False)
            entry[key] = relative
        index[preset] = entry
    (out_dir / "speaker_embeddings_path.json").write_text(json.dumps(index, indent=1), encoding="utf-8")


def _without_nulls(value: Any) -> Any:
    """Drop unset (None) fields, as the hub's generation_config.json files do."""
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    return value


def build_checkpoint(out_dir: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """Write a random-weight Bark checkpoint to `out_dir` and return its path."""
    from transformers import (
        BarkCoarseConfig,
        BarkConfig,
        BarkFineConfig,
        BarkModel,
        BarkSemanticConfig,
        EncodecConfig,
    )
    from transformers.models.bark.generation_configuration_bark import (
        BarkCoarseGenerationConfig,
        BarkFineGenerationConfig,
        BarkGenerationConfig,
        BarkSemanticGenerationConfig,
    )

    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    shape = SIZES[size]
    common: dict[str, Any] = {"block_size": 1024, "bias": False, "dropout": 0.0, **shape}
    config = BarkConfig(
        semantic_config=BarkSemanticConfig(
            input_vocab_size=SEMANTIC_INPUT_VOCAB, output_vocab_size=SEMANTIC_OUTPUT_VOCAB, **common
        ).to_dict(),
        coarse_acoustics_config=BarkCoarseConfig(
            input_vocab_size=COARSE_VOCAB, output_vocab_size=COARSE_VOCAB, **common
        ).to_dict(),
        fine_acoustics_config=BarkFineConfig(
            input_vocab_size=FINE_VOCAB,
            output_vocab_size=FINE_VOCAB,
            n_codes_total=N_FINE_CODEBOOKS,
            n_codes_given=1,
            **{**common, "bias": True},
        ).to_dict(),
        codec_config=EncodecConfig(**CODEC_OVERRIDES[size]).to_dict(),
    )
    model = BarkModel(config).eval()
    model.save_pretrained(out)

    # Written after the model so that its generic generation config does not overwrite Bark's, and
    # as plain JSON: `BarkGenerationConfig.save_pretrained` fails validation on transformers 5, while
    # the hub's checkpoints hold exactly this nested JSON.
    generation_config = BarkGenerationConfig(
        semantic_config=BarkSemanticGenerationConfig(
            max_new_tokens=768, min_eos_p=0.2, temperature=0.7, do_sample=True
        ).to_dict(),
        coarse_acoustics_config=BarkCoarseGenerationConfig(temperature=0.7, do_sample=True).to_dict(),
        fine_acoustics_config=BarkFineGenerationConfig(temperature=0.5).to_dict(),
        sample_rate=24_000,
        codebook_size=CODEBOOK_SIZE,
    )
    (out / "generation_config.json").write_text(json.dumps(_without_nulls(generation_config.to_dict()), indent=1))
    _write_tokenizer(out)
    _write_voice_presets(out, seed)
    logger.info("wrote a random-weight %s Bark checkpoint to %s", size, out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="folder to write the checkpoint into")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    path = build_checkpoint(args.out_dir, size=args.size, seed=args.seed)
    print(path)


if __name__ == "__main__":
    main()
