"""Tiny random-init causal LMs and an offline byte-level BPE tokenizer, built at test time (no downloads).

Import the fixtures into a test module (``from lm_fixtures import tiny_tokenizer, tiny_lm``). The tokenizer is
trained on the stdlib's ``pydoc_data`` text; the models are saved to a temporary folder and reloaded through
``aen_lib.data.lm.load_lm``, the same code path as a hub id.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

ARCHS = ("gpt_neox", "llama")
VOCAB = 512
N_LAYERS = 4
D_MODEL = 32


def pydoc_texts(n: int | None = None) -> list[str]:
    """Paragraphs of the stdlib's pydoc topics (always installed)."""
    from aen_lib.data.text import _pydoc_documents

    docs = _pydoc_documents()
    return docs if n is None else docs[:n]


def build_tokenizer(vocab_size: int = VOCAB):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with ``<|endoftext|>`` as BOS/EOS/UNK and ``<|padding|>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=["<|endoftext|>", "<|padding|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(pydoc_texts(400), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>", pad_token="<|padding|>")


def build_tiny_lm_dir(root: Path, arch: str, tokenizer, seed: int = 0, train_steps: int = 40) -> Path:
    """Save a tiny ``arch`` model (d 32, 4 blocks) and ``tokenizer`` to ``root/arch``; return the folder.

    The model is trained for ``train_steps`` Adam steps on pydoc windows, so that it predicts text better than
    chance and destroying its residual stream measurably raises the cross-entropy.
    """
    from transformers import AutoModelForCausalLM, GPTNeoXConfig, LlamaConfig

    from aen_lib.data.text import pack_windows

    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    common = dict(vocab_size=len(tokenizer), hidden_size=D_MODEL, num_hidden_layers=N_LAYERS, num_attention_heads=4,
                  max_position_embeddings=256, tie_word_embeddings=False, **ids)
    if arch == "gpt_neox":
        cfg = GPTNeoXConfig(intermediate_size=128, rotary_pct=0.25, use_parallel_residual=True, **common)
    elif arch == "llama":
        cfg = LlamaConfig(intermediate_size=86, num_key_value_heads=2, **common)
    else:
        raise ValueError(f"arch={arch!r}; allowed: {ARCHS}")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    train = pack_windows(pydoc_texts()[100:], tokenizer, window=24, max_windows=512)  # disjoint from tiny_windows
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(train_steps):
        batch = train[torch.randint(0, len(train), (16,), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = root / arch
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_lm_dirs(tmp_path_factory) -> dict[str, Path]:
    """Folders of the tiny models (built once per session, shared by every module that imports the fixtures)."""
    root = tmp_path_factory.getbasetemp() / "aen_tiny_lms"
    dirs = {arch: root / arch for arch in ARCHS}
    if not all((d / "model.safetensors").is_file() for d in dirs.values()):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny matmuls: one thread is faster and gentler on a shared CPU
        try:
            tok = build_tokenizer()
            for arch in ARCHS:
                build_tiny_lm_dir(root, arch, tok)
        finally:
            torch.set_num_threads(threads)
    return dirs


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_lm_dirs):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_lm_dirs[ARCHS[0]])


@pytest.fixture(params=ARCHS)
def tiny_lm(request, tiny_lm_dirs):
    """(arch, model, tokenizer) for each tiny architecture, loaded with ``aen_lib.data.lm.load_lm``."""
    from aen_lib.data.lm import load_lm

    model, tok = load_lm(tiny_lm_dirs[request.param], dtype=torch.float32, device="cpu")
    return request.param, model, tok


@pytest.fixture(scope="session")
def tiny_windows(tiny_tokenizer) -> torch.Tensor:
    """[12, 24] windows packed from pydoc text (EOS-separated documents, no BOS)."""
    from aen_lib.data.text import pack_windows

    return pack_windows(pydoc_texts(60), tiny_tokenizer, window=24, max_windows=12)


@pytest.fixture
def single_thread():
    """Run a test with one torch thread (tiny matmuls: faster, and gentler on a shared CPU); restore afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def tiny_cache_config(layer: int = 1, **kw):
    """The activation-cache config of the tiny test LMs at ``layer`` (fields in ``kw`` override)."""
    from aen_lib.data.activation_cache import CacheConfig

    return CacheConfig(**{**dict(model="tiny", layer=layer, d_model=D_MODEL, window=24, dataset="pydoc"), **kw})
