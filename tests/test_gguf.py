"""GGUF export: the README's path from a JSONL file to llama.cpp, run as written, then checked by
reading the file back (gguf) and by llama.cpp itself (llama-cpp-python; skips without it)."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import numpy as np
import orjson
import pytest
from tokenizers import Tokenizer

from loop_tui import cli
from loop_tui.data.tokens import EOT

from .test_bad_inputs import mounts  # noqa: F401 (the tmpfs fixture, taken by name)

gguf = pytest.importorskip("gguf")

README = Path(__file__).resolve().parent.parent / "README.md"
SENTENCES = [
    "the quick brown fox jumps over the lazy dog.",
    "a stitch in time saves nine.",
    "all that glitters is not gold.",
    "the early bird catches the worm.",
]


def readme_commands() -> list[str]:
    """The shell block of README's "From your data to llama.cpp" section."""
    text = README.read_text()
    section = text[text.index("## From your data to llama.cpp") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "no command block in the section"
    return [line for line in block.group(1).splitlines() if line.strip()]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A folder where the README's `loop` commands ran as written, on a JSONL file of sentences."""
    home = tmp_path_factory.mktemp("readme")
    rng = np.random.default_rng(0)
    with open(home / "my.jsonl", "wb") as f:
        for i in range(400):
            text = f"{i * 37 % 10000} " + " ".join(rng.choice(SENTENCES, 3))  # numbers: merges of digits
            f.write(orjson.dumps({"id": i, "text": text}) + b"\n")
    commands = readme_commands()
    assert [c.split()[:2] for c in commands] == [["loop", "train"], ["loop", "export"], ["ollama", "create"]]
    cwd = os.getcwd()
    os.chdir(home)
    try:
        for command in commands[:2]:
            assert cli.main(shlex.split(command)[1:]) == 0, command
    finally:
        os.chdir(cwd)
    return home


def load_run(run: Path):
    from loop_tui.sources import load_model

    return load_model(run, warn=lambda m: None)


def export(run: Path, out: Path, dtype: str, capsys) -> Path:
    assert cli.main(["export", str(run), str(out), "--type", dtype]) == 0
    assert "GGUF" in capsys.readouterr().out
    return out


def read_tensors(path: Path) -> dict[str, tuple[str, np.ndarray]]:
    r = gguf.GGUFReader(path)
    out = {}
    for t in r.tensors:
        shape = tuple(int(n) for n in reversed(t.shape))  # GGUF lists dimensions innermost first
        values = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape)
        out[t.name] = (t.tensor_type.name, values)
    return out


def field(reader, key: str):
    return reader.fields[key].contents()


def test_readme_commands_write_the_model_and_a_modelfile(exported):
    modelfile = (exported / "Modelfile").read_text()
    assert re.search(r"^FROM \./mine\.gguf$", modelfile, re.M) and (exported / "mine.gguf").exists()
    assert f'PARAMETER stop "{EOT}"' in modelfile
    cfg = load_run(exported / "runs" / "mine").cfg
    assert re.search(rf"^PARAMETER num_ctx {cfg.positions}$", modelfile, re.M)
    assert 'TEMPLATE """{{ .Prompt }}"""' in modelfile  # a base model: the prompt is continued as is
    # every line is a Modelfile instruction (or a comment)
    assert all(line.split()[0] in ("#", "FROM", "TEMPLATE", "PARAMETER") for line in modelfile.splitlines())
    assert "ollama create mine -f Modelfile" in readme_commands()


def test_gguf_holds_the_runs_weights_tokenizer_and_shape(exported, tmp_path, capsys):
    src = load_run(exported / "runs" / "mine")
    cfg, params = src.cfg, src.params
    path = export(exported / "runs" / "mine", tmp_path / "m.gguf", "f32", capsys)
    r = gguf.GGUFReader(path)
    assert field(r, "general.architecture") == "gpt2"
    assert field(r, "gpt2.context_length") == cfg.positions
    assert field(r, "gpt2.embedding_length") == cfg.d_model
    assert field(r, "gpt2.feed_forward_length") == cfg.d_ff
    assert field(r, "gpt2.block_count") == cfg.num_layers
    assert field(r, "gpt2.attention.head_count") == cfg.num_heads
    assert field(r, "tokenizer.ggml.model") == "gpt2" and field(r, "tokenizer.ggml.pre") == "gpt-2"

    tok = Tokenizer.from_str(src.tokenizer_json.decode())
    tokens = field(r, "tokenizer.ggml.tokens")
    assert tokens == [tok.id_to_token(i) for i in range(tok.get_vocab_size())]
    eot = tok.token_to_id(EOT)
    assert field(r, "tokenizer.ggml.eos_token_id") == eot and field(r, "tokenizer.ggml.token_type")[eot] == 3
    merges = orjson.loads(src.tokenizer_json)["model"]["merges"]
    assert field(r, "tokenizer.ggml.merges") == [m if isinstance(m, str) else " ".join(m) for m in merges]

    t = read_tensors(path)
    n = len(tokens)
    assert np.array_equal(t["token_embd.weight"][1], params["wte"][:n])
    assert np.array_equal(t["position_embd.weight"][1], params["wpe"])
    for l in range(cfg.num_layers):
        assert np.array_equal(t[f"blk.{l}.attn_qkv.weight"][1], params[f"h{l}.qkv_w"].T)  # (out, in)
        assert np.array_equal(t[f"blk.{l}.attn_qkv.bias"][1], params[f"h{l}.qkv_b"])
        assert np.array_equal(t[f"blk.{l}.attn_output.weight"][1], params[f"h{l}.proj_w"].T)
        assert np.array_equal(t[f"blk.{l}.ffn_up.weight"][1], params[f"h{l}.fc_w"].T)
        assert np.array_equal(t[f"blk.{l}.ffn_down.weight"][1], params[f"h{l}.fcproj_w"].T)
        assert np.array_equal(t[f"blk.{l}.attn_norm.weight"][1], params[f"h{l}.ln1_w"])
        assert np.array_equal(t[f"blk.{l}.ffn_norm.bias"][1], params[f"h{l}.ln2_b"])
    assert np.array_equal(t["output_norm.weight"][1], params["lnf_w"])
    assert "output.weight" not in t  # tied: llama.cpp uses token_embd as the LM head
    assert len(t) == 2 + 12 * cfg.num_layers + 2


@pytest.mark.parametrize(
    "dtype,matrix_type,tolerance", [("f16", "F16", 2e-3), ("bf16", "BF16", 1e-2), ("q8_0", "Q8_0", 1e-2)]
)
def test_gguf_types_quantize_the_matrices_only(exported, tmp_path, capsys, dtype, matrix_type, tolerance):
    params = load_run(exported / "runs" / "mine").params
    t = read_tensors(export(exported / "runs" / "mine", tmp_path / f"m-{dtype}.gguf", dtype, capsys))
    assert t["token_embd.weight"][0] == t["blk.0.attn_qkv.weight"][0] == t["blk.1.ffn_down.weight"][0] == matrix_type
    assert t["position_embd.weight"][0] == t["blk.0.attn_qkv.bias"][0] == t["output_norm.weight"][0] == "F32"
    want = params["h0.fc_w"].T
    scale = np.abs(want).max()
    assert np.abs(t["blk.0.ffn_up.weight"][1] - want).max() <= tolerance * scale


def test_export_refuses_to_overwrite(exported, tmp_path, capsys):
    (tmp_path / "taken.gguf").write_bytes(b"x")
    code = cli.main(["export", str(exported / "runs" / "mine"), str(tmp_path / "taken.gguf")])
    err = capsys.readouterr().err
    assert code != 0 and "exists" in err and (tmp_path / "taken.gguf").read_bytes() == b"x"
    assert not (tmp_path / "Modelfile").exists()


def test_export_onto_a_full_disk_is_exit_5_and_leaves_nothing(exported, tmp_path, capsys, request):
    from loop_tui import errors

    disk = request.getfixturevalue("mounts")(tmp_path / "small", "size=128k")  # the f32 file is larger
    code = cli.main(["export", str(exported / "runs" / "mine"), str(disk / "m.gguf"), "--type", "f32"])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("loop: error:")]
    assert code == errors.EXIT_OS and len(lines) == 1 and "cannot write" in lines[0], err
    assert list(disk.iterdir()) == []  # neither the file, its temporary, nor a Modelfile


# ---------------------------------------------------------------- llama.cpp itself
PROMPT = "a stitch in"


def loop_generate(run: Path, tokens: int, capsys) -> str:
    assert cli.main(["generate", str(run), "--prompt", PROMPT, "--temperature", "0", "--tokens", str(tokens)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(PROMPT)
    return out[len(PROMPT) :].rstrip("\n")


def llama_greedy(llm, prompt_ids: list[int], tokens: int) -> list[int]:
    assert llm.tokenize(PROMPT.encode(), add_bos=False, special=False) == prompt_ids  # the same BPE
    llm.reset()
    out: list[int] = []
    for t in llm.generate(prompt_ids, temp=0.0, top_k=1, repeat_penalty=1.0):
        if t == llm.token_eos() or len(out) == tokens:
            break
        out.append(t)
    return out


AWKWARD = "the fox's 9250 2220 370 jumps!!  over\n\n  the dog. naïve café — 😀 日本語 <|endoftext|> I'll   \t\tend  "


def test_llama_cpp_tokenizes_and_decodes_as_the_run_does(exported, tmp_path, capsys):
    """GPT-2's pre-tokenizer (contractions, runs of spaces, numbers whole: llama3's or qwen2's
    digit groups would split these trained merges), bytes outside the trained merges (emoji, CJK)
    and the end-of-text token: llama.cpp's ids are the run's own."""
    llama_cpp = pytest.importorskip("llama_cpp")
    run = exported / "runs" / "mine"
    tok = Tokenizer.from_str(load_run(run).tokenizer_json.decode())
    path = export(run, tmp_path / "m.gguf", "f16", capsys)
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    ids = tok.encode(AWKWARD).ids
    assert llm.tokenize(AWKWARD.encode(), add_bos=False, special=True) == ids
    assert llm.detokenize(ids, special=True).decode() == AWKWARD


@pytest.mark.parametrize("dtype,compared", [("f32", None), ("q8_0", 4)])
def test_llama_cpp_greedy_tokens_are_loop_generates(exported, tmp_path, capsys, dtype, compared):
    """F32: the logits after the prompt (to llama.cpp's GELU table) and every token of the greedy
    continuation; Q8_0: its first tokens (rounding may change a later near-tie)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from loop_tui.backend import make_backend
    from loop_tui.model.gpt import GPT

    run = exported / "runs" / "mine"
    src = load_run(run)
    tok = Tokenizer.from_str(src.tokenizer_json.decode())
    prompt_ids = tok.encode(PROMPT).ids
    n = src.cfg.positions - len(prompt_ids)  # within one window: llama.cpp does not slide it
    want = loop_generate(run, n, capsys)
    path = export(run, tmp_path / f"m-{dtype}.gguf", dtype, capsys)
    T = src.cfg.positions
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=T, n_batch=T, n_threads=1, logits_all=True, verbose=False)
    if compared is None:
        llm.eval(prompt_ids)
        theirs = np.asarray(llm.scores[len(prompt_ids) - 1])
        model = GPT(src.cfg, make_backend("c", 1, None, "fp32"), batch_size=1)
        model.load_params(src.params)
        ours = model.next_token_logits(np.asarray(prompt_ids, np.int32))[: len(theirs)]
        assert np.abs(theirs - ours).max() <= 1e-3 * np.abs(ours).max()
    got = llama_greedy(llm, prompt_ids, n)
    assert len(tok.decode(got)) > 10
    if compared is None:
        assert tok.decode(got) == want
    else:
        assert got[:compared] == tok.encode(want).ids[:compared]


def test_eval_scores_each_record_as_its_own_document(exported, tmp_path):
    from loop_tui.backend import make_backend
    from loop_tui.data.corpus import load_corpus
    from loop_tui.evaluate import evaluate
    from loop_tui.model.gpt import GPT

    src = load_run(exported / "runs" / "mine")
    tok = Tokenizer.from_str(src.tokenizer_json.decode())
    texts = SENTENCES * 2
    f = tmp_path / "held.jsonl"
    f.write_bytes(b"".join(orjson.dumps({"text": t}) + b"\n" for t in texts))

    def factory(batch: int, seq: int):
        m = GPT(src.cfg.replace(batch_size=batch, max_length=seq), make_backend("c", 1, None, "fp32"), batch, seq)
        m.load_params(src.params)
        return m

    r = evaluate(factory, tok, load_corpus(f), src.cfg.max_length, 4)
    lengths = [len(tok.encode(t).ids) for t in texts]
    assert max(lengths) <= src.cfg.max_length + 1  # each record fits one window
    assert (r.tokens, r.predicted, r.bytes) == (sum(lengths), sum(lengths) - len(texts), sum(map(len, texts)))
