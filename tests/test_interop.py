"""HuggingFace interop: export to a transformers GPT-2 folder, --init-from one, `loop eval`, and the
padded vocabulary. Folders are built with transformers itself and a BPE trained on the fly:
nothing is downloaded."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from loop_tui import cli, hf
from loop_tui import kernels as K
from loop_tui.config import from_dict, load_config
from loop_tui.kernels.backend import CBackend
from loop_tui.model.gpt import GPT

from .corpora import train_bpe

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install -e '.[dev]')")
torch = pytest.importorskip("torch", reason="torch is not installed (transformers needs it)")

AWKWARD = "Hello 😀 world! 日本語のテキスト  \n\n\n   indented\t\ttabs   trailing   \r\n<|endoftext|>Ünïcödé ​zero-width"


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    """A random GPT-2 at GPT-2's vocabulary and context (50257, 1024), saved by transformers."""
    out = tmp_path_factory.mktemp("hf") / "gpt2-tiny"
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=1024, vocab_size=50257)
    model = transformers.GPT2LMHeadModel(cfg)
    with torch.no_grad():  # LayerNorms and biases away from their init, so every tensor is checked
        for name, p in model.named_parameters():
            if "ln_" in name or name.endswith(".bias"):
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(out)
    train_bpe().save(str(out / "tokenizer.json"))
    return out


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory) -> Path:
    import pydoc_data.topics as topics

    d = tmp_path_factory.mktemp("evaltext")
    texts = list(topics.topics.values())
    (d / "a.txt").write_text(texts[50])
    (d / "b.txt").write_text(texts[60] + AWKWARD)
    (d / "tiny.txt").write_text("x")  # one token: no window, but its byte and token count
    return d


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def hf_loss(folder: Path, data: Path, T: int) -> float:
    """`loop eval`'s definition, computed by transformers alone."""
    model = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    total, n = 0.0, 0
    for f in sorted(data.iterdir()):
        ids = tok(f.read_bytes().decode(), verbose=False)["input_ids"]  # as written: no newline translation
        for i in range(0, len(ids), T + 1):
            w = ids[i : i + T + 1]
            if len(w) < 2:
                continue
            with torch.no_grad():
                logits = model(torch.tensor([w[:-1]])).logits[0].double()
            total += torch.nn.functional.cross_entropy(logits, torch.tensor(w[1:]), reduction="sum").item()
            n += len(w) - 1
    return total / n


def test_hf_to_loop_to_hf_is_bit_identical(gpt2_dir, tmp_path):
    src = hf.read_folder(gpt2_dir)
    cfg = from_dict({**src.shape, "batch_size": 1, "max_length": 64}, "test")
    model = GPT(cfg, CBackend())
    model.load_params(src.params)  # through the padded arena and back
    out = tmp_path / "again"
    hf.export_params(cfg, model.export_params(), src.tokenizer_path.read_bytes(), out)
    a, b = hf.read_safetensors(gpt2_dir / "model.safetensors"), hf.read_safetensors(out / "model.safetensors")
    a.pop("lm_head.weight", None)  # tied to wte
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype == np.float32
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert cfg.padded_vocab == 50304 and model.params["wte"].shape == (50304, 64)


def test_logits_match_transformers_at_gpt2_vocab_and_context(gpt2_dir):
    src = hf.read_folder(gpt2_dir)
    T = 1024
    cfg = from_dict({**src.shape, "batch_size": 1, "max_length": T}, "test")
    model = GPT(cfg, CBackend())
    model.load_params(src.params)
    rng = np.random.default_rng(3)
    x = rng.integers(0, 50257, (1, T)).astype(np.int32)
    model.load_batch(x)
    model.forward_body()
    rows = np.arange(0, T, 97)
    ours = np.stack([K.matmul(model.acts["lnf"][r : r + 1], model.params["wte"], transpose_b=True)[0] for r in rows])
    ref = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
    with torch.no_grad():
        want = ref(torch.tensor(x, dtype=torch.long)).logits[0, rows].numpy()
    assert np.all(ours[:, 50257:] == 0.0)  # the padded columns: zero rows of wte
    err = np.abs(ours[:, :50257] - want).max() / np.abs(want).max()
    assert err < 1e-4, f"relative logit error {err:.2e}"


def test_finetune_export_and_eval_agree_with_transformers(gpt2_dir, eval_dir, tmp_path, capsys):
    run, out = tmp_path / "run", tmp_path / "exported"
    code, _, err = run_cli(capsys, "train", "smoke", "--init-from", str(gpt2_dir), "--steps", "20", "--no-tui",
                           "--out", str(run))  # fmt: skip
    assert code == 0, err
    assert "vocab_size 512 → 50257" in err  # the shape from the folder wins, said in one line
    assert run_cli(capsys, "export", str(run), str(out))[0] == 0
    code, stdout, err = run_cli(capsys, "eval", str(run), "--data", str(eval_dir), "--json")
    assert code == 0, err
    ours = json.loads(stdout)
    assert set(ours) == {"loss", "perplexity", "bits_per_byte", "tokens", "bytes", "files", "model"}
    assert ours["model"].startswith(f"{run} step ")  # which checkpoint was scored
    assert ours["files"] == 3 and ours["perplexity"] == pytest.approx(math.exp(ours["loss"]))
    T = from_dict(json.loads((run / "config.json").read_text()), "run").max_length
    assert ours["loss"] == pytest.approx(hf_loss(out, eval_dir, T), rel=1e-4)
    # the fine-tune changed the weights: the pretrained folder scores differently on the same text
    code, stdout, _ = run_cli(capsys, "eval", str(gpt2_dir), "--data", str(eval_dir), "--json", "--context", str(T))
    assert code == 0 and json.loads(stdout)["loss"] != pytest.approx(ours["loss"], rel=1e-3)
    # transformers generates from the exported folder: greedy, token for token the same as ours
    tok = transformers.AutoTokenizer.from_pretrained(out)
    model = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    prompt = tok("The Python", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        theirs = model.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0)[0, prompt.shape[1] :]
    code, stdout, err = run_cli(capsys, "generate", str(run), "--prompt", "The Python", "--tokens", "12",
                                "--temperature", "0")  # fmt: skip
    assert code == 0, err
    ours_ids = tok(stdout.rstrip("\n"), verbose=False)["input_ids"][prompt.shape[1] :]
    assert tok.decode(theirs) == stdout.rstrip("\n")[len("The Python") :], (ours_ids, theirs.tolist())


def test_resume_of_a_finetune_keeps_its_shape(gpt2_dir, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "smoke", "--no-tui", "--out", str(run), "--steps", "4"]
    assert run_cli(capsys, *args, "--init-from", str(gpt2_dir))[0] == 0
    code, _, err = run_cli(capsys, *args, "--resume")
    assert code == 0, err
    assert "the model shape comes from the run" in err and "vocab_size 512 → 50257" in err
    state = json.loads(sorted((run / "checkpoints").iterdir())[-1].joinpath("state.json").read_text())
    assert state["step"] == 8 and state["config"]["vocab_size"] == 50257


def test_tokenizer_ids_identical_on_awkward_text(gpt2_dir, tmp_path, capsys):
    from tokenizers import Tokenizer

    run, out = tmp_path / "run", tmp_path / "exported"
    assert run_cli(capsys, "train", "smoke", "--steps", "2", "--no-tui", "--out", str(run))[0] == 0
    assert run_cli(capsys, "export", str(run), str(out))[0] == 0
    ours = Tokenizer.from_file(str(run / "tokenizer.json"))
    theirs = transformers.AutoTokenizer.from_pretrained(out)
    texts = [AWKWARD, " leading space", "a" * 3000, "\n" * 50, "😀" * 20, "中文字符和 English mixed", ""]
    for text in texts:
        assert theirs(text)["input_ids"] == ours.encode(text).ids, text[:30]
        assert theirs.decode(ours.encode(text).ids) == text
    # and a GPT-2 style folder with only vocab.json + merges.txt imports to the same ids
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "config.json").write_text((gpt2_dir / "config.json").read_text())
    (slow / "model.safetensors").write_bytes((gpt2_dir / "model.safetensors").read_bytes())
    Tokenizer.from_file(str(gpt2_dir / "tokenizer.json")).model.save(str(slow))
    rebuilt = Tokenizer.from_file(str(hf.read_folder(slow).tokenizer_path))
    original = Tokenizer.from_file(str(gpt2_dir / "tokenizer.json"))
    for text in texts:
        assert rebuilt.encode(text).ids == original.encode(text).ids


def test_pickle_only_folder_is_refused(gpt2_dir, tmp_path, capsys):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((gpt2_dir / "config.json").read_text())
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    code, _, err = run_cli(
        capsys, "train", "smoke", "--init-from", str(folder), "--no-tui", "--out", str(tmp_path / "r")
    )
    lines = [x for x in err.splitlines() if x.startswith("loop: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "pickle" in lines[0] and "save_pretrained" in lines[0]


def test_unsupported_folders_are_refused_in_one_line(gpt2_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    conf = json.loads((gpt2_dir / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**conf, "activation_function": "relu"}))
    code, _, err = run_cli(capsys, "eval", str(bad), "--data", str(tmp_path))
    assert code == 2 and "activation_function 'relu'" in err
    code, _, err = run_cli(capsys, "export", str(tmp_path / "nothing"), str(tmp_path / "out"))
    assert code == 2 and "no such run folder" in err


def test_exported_config_names_the_runs_dropout_where_gpt2_has_it():
    cfg = load_config("smoke").replace(dropout=0.1)
    got = hf.hf_config(cfg, 0)
    assert (got["embd_pdrop"], got["resid_pdrop"], got["attn_pdrop"]) == (0.1, 0.1, 0.0)
    assert transformers.GPT2Config(**got).resid_pdrop == 0.1


def test_export_refuses_a_non_empty_folder_and_finds_steps(tmp_path, capsys):
    run, out = tmp_path / "run", tmp_path / "out"
    assert run_cli(capsys, "train", "smoke", "--steps", "4", "--checkpoint-every", "2", "--no-tui", "--out",
                   str(run))[0] == 0  # fmt: skip
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_cli(capsys, "export", str(run), str(out))
    assert code == 2 and "not empty" in err and (out / "keep.txt").read_text() == "mine"
    code, _, err = run_cli(capsys, "export", str(run), str(tmp_path / "x"), "--step", "3")
    assert code == 2 and "has: 2, 4" in err
    code, stdout, err = run_cli(capsys, "export", str(run), str(tmp_path / "s2"), "--step", "2")
    assert code == 0 and "step 2" in stdout
    assert json.loads((tmp_path / "s2" / "config.json").read_text())["vocab_size"] == 512


def test_padded_vocab_never_reaches_loss_gradient_or_sampling():
    from loop_tui.train.sample import generate

    cfg = from_dict({"d_model": 32, "num_heads": 2, "num_layers": 1, "d_ff": 64, "batch_size": 2,
                     "max_length": 8, "vocab_size": 300}, "t")  # fmt: skip
    assert cfg.padded_vocab == 320
    m = GPT(cfg, CBackend())
    m.init_weights(0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 300, (2, 9)).astype(np.int32)
    clean = m.forward_backward(x[:, :-1], x[:, 1:])
    m.params["wte"][300:] = 50.0  # padded rows that would dominate every logit if they counted
    assert m.forward_backward(x[:, :-1], x[:, 1:]) == clean
    assert not m.grads["wte"][300:].any()
    tok = train_bpe(300)
    sampler = GPT(cfg, CBackend(), batch_size=1, params=m.params)
    assert sampler.next_token_logits(np.array([1, 2, 3], np.int32)).shape == (300,)
    for seed in range(3):
        text = generate(sampler, tok, "a", 20, temperature=1.5, top_k=0, rng=np.random.default_rng(seed))
        assert all(i < 300 for i in tok.encode(text).ids)


def test_crossentropy_vocab_leaves_padded_columns_out(isa):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 128)).astype(np.float32)
    targets = rng.integers(0, 100, 5).astype(np.int32)
    want = np.zeros(5, np.float32)
    K.crossentropy(logits[:, :100].copy(), targets, want)
    got = np.zeros(5, np.float32)
    K.crossentropy(logits, targets, got, grad_scale=0.5, write_grad=True, vocab=100)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert not logits[:, 100:].any()
    np.testing.assert_allclose(logits[:, :100].sum(axis=1), 0.0, atol=1e-6)  # softmax - onehot sums to 0
    with pytest.raises(ValueError, match="vocab"):
        K.crossentropy(logits, targets, got, vocab=129)
