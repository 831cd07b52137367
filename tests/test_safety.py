"""Safety: nothing is unpickled, manifests cannot point outside their root, servers stay local,
and the input limits reject hostile files before they cost memory.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from faults import BOMBS, build_corpus
from flowrun import REPO, require_module
from hypothesis import given, settings
from hypothesis import strategies as st

from datasets.io import relative_to_root
from models.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    STATE_TENSORS_FILE,
    ModelDirectoryError,
    load_config,
    load_train_state,
    load_weights,
    save_model,
    save_train_state,
)

SOURCE_DIRS = ("datasets", "models", "tasks", "flows", "bench")

# --- no pickle anywhere -------------------------------------------------------------------

# (module, attribute) calls that unpickle, or run text as code.
FORBIDDEN_CALLS = {
    ("torch", "load"),
    ("pickle", "load"),
    ("pickle", "loads"),
    ("pickle", "Unpickler"),
    ("cPickle", "load"),
    ("dill", "load"),
    ("dill", "loads"),
    ("joblib", "load"),
    ("pd", "read_pickle"),
    ("pandas", "read_pickle"),
    ("yaml", "load"),
    ("yaml", "unsafe_load"),
    ("marshal", "loads"),
    ("shelve", "open"),
}
FORBIDDEN_BUILTINS = {"eval", "exec", "__import__"}
FORBIDDEN_KEYWORDS = {("allow_pickle", True), ("weights_only", False)}


def source_files() -> list[Path]:
    files = []
    for directory in SOURCE_DIRS:
        files += sorted((REPO / directory).rglob("*.py"))
    return files


def forbidden_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [alias.name for alias in node.names]
            module = getattr(node, "module", None) or ""
            if {"pickle", "dill", "cPickle", "shelve", "marshal"} & {module, *names}:
                found.append(f"{path}:{node.lineno}: imports an unpickler")
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in FORBIDDEN_BUILTINS:
            found.append(f"{path}:{node.lineno}: calls {func.id}()")
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and (func.value.id, func.attr) in FORBIDDEN_CALLS
        ):
            found.append(f"{path}:{node.lineno}: calls {func.value.id}.{func.attr}()")
        for keyword in node.keywords:
            value = keyword.value
            if isinstance(value, ast.Constant) and (keyword.arg, value.value) in FORBIDDEN_KEYWORDS:
                found.append(f"{path}:{node.lineno}: passes {keyword.arg}={value.value}")
    return found


def test_no_pickle_or_eval_in_the_code():
    files = source_files()
    assert len(files) > 10
    problems = [problem for path in files for problem in forbidden_uses(path)]
    assert not problems, "\n".join(problems)


def test_no_torch_load_in_the_source_text():
    """A plain text search too, so an alias (`from torch import load`) cannot slip by."""
    pattern = re.compile(r"torch\s*\.\s*load\b|from\s+torch\s+import\s+.*\bload\b")
    hits = [
        f"{path}:{number}"
        for path in source_files()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, hits


def test_the_scanner_finds_what_it_forbids(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\nimport torch\nimport numpy as np\n"
        "torch.load('x')\neval('1')\nnp.load('x', allow_pickle=True)\n"
        "torch.load('y', weights_only=False)\n"
    )
    found = forbidden_uses(bad)
    assert len(found) == 6, found


@dataclasses.dataclass
class TinyConfig:
    width: int = 4


class Tiny(torch.nn.Module):
    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(config.width, 2)


class _Payload:
    """Unpickling this creates `marker`: proof that something unpickled the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def malicious_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"layer.weight": _Payload(marker)}))


def test_checkpoint_ignores_pickle_files_beside_it(tmp_path):
    generator = torch.Generator().manual_seed(0)
    model = Tiny(TinyConfig())
    with torch.no_grad():
        model.layer.weight.copy_(torch.randn(2, 4, generator=generator))
    save_model(tmp_path, model, TinyConfig())
    marker = tmp_path.parent / "unpickled"
    for name in ("model.pt", "pytorch_model.bin", "model.ckpt", "train_state.pt", "model.pkl"):
        malicious_pickle(tmp_path / name, marker)
    loaded = load_weights(tmp_path, Tiny(load_config(tmp_path, TinyConfig)))
    assert torch.equal(loaded.layer.weight, model.layer.weight)
    assert not marker.exists()


def test_checkpoint_refuses_a_pickle_named_safetensors(tmp_path):
    save_model(tmp_path, Tiny(TinyConfig()), TinyConfig())
    marker = tmp_path.parent / "unpickled"
    malicious_pickle(tmp_path / MODEL_FILE, marker)
    with pytest.raises(Exception) as info:  # noqa: PT011 - any refusal, as long as it refuses
        load_weights(tmp_path, Tiny(TinyConfig()))
    assert not isinstance(info.value, pickle.UnpicklingError)
    assert not marker.exists()
    # The same for a torch.save archive (a zip holding a pickle) under the safetensors name.
    torch.save(Tiny(TinyConfig()).state_dict(), tmp_path / MODEL_FILE)
    with pytest.raises(Exception):  # noqa: B017, PT011 - any refusal, as long as it refuses
        load_weights(tmp_path, Tiny(TinyConfig()))


def test_train_state_refuses_a_pickle(tmp_path):
    model = Tiny(TinyConfig())
    optimizer = torch.optim.AdamW(model.parameters())
    model.layer.weight.sum().backward()
    optimizer.step()
    save_train_state(tmp_path, optimizer, {"step": 1}, torch.Generator().manual_seed(1))
    marker = tmp_path.parent / "unpickled"
    malicious_pickle(tmp_path / STATE_TENSORS_FILE, marker)
    with pytest.raises(Exception):  # noqa: B017, PT011 - any refusal, as long as it refuses
        load_train_state(tmp_path, torch.optim.AdamW(model.parameters()))
    assert not marker.exists()


def test_config_is_json_only(tmp_path):
    save_model(tmp_path, Tiny(TinyConfig()), TinyConfig())
    (tmp_path / CONFIG_FILE).write_bytes(pickle.dumps(TinyConfig(width=4)))
    with pytest.raises(ModelDirectoryError, match="not a readable JSON config") as info:
        load_config(tmp_path, TinyConfig)
    assert isinstance(info.value.__cause__, json.JSONDecodeError | UnicodeDecodeError)


def saved_tiny(kind: str, directory: Path):
    """A real tiny checkpoint of one of our models, and the loader users reach it by."""
    if kind == "music":
        from models.symbolic.config import MusicConfig
        from models.symbolic.transformer import MusicTransformer

        config = MusicConfig.preset("tiny", vocab_size=64)
        save_model(directory, MusicTransformer(config), config)
        return MusicTransformer.load
    from models.audio.config import preset
    from models.audio.infer import load_model
    from models.audio.unet import AudioUNet

    config = preset("tiny")
    save_model(directory, AudioUNet(config), config)
    return load_model


@pytest.mark.parametrize(
    ("module", "kind"),
    [("models/symbolic/transformer.py", "music"), ("models/audio/infer.py", "audio")],
)
def test_model_loaders_refuse_pickles(tmp_path, module, kind):
    """The loaders users call (`--model DIR`) read safetensors only: a checkpoint loads with
    pickles beside it, and a pickle under the safetensors name is refused, never unpickled."""
    require_module(module)
    load = saved_tiny(kind, tmp_path)
    marker = tmp_path.parent / f"unpickled-{kind}"
    for name in ("model.pt", "pytorch_model.bin", "model.pkl"):
        malicious_pickle(tmp_path / name, marker)
    load(tmp_path)
    malicious_pickle(tmp_path / MODEL_FILE, marker)
    with pytest.raises(Exception):  # noqa: B017, PT011 - any refusal, as long as it refuses
        load(tmp_path)
    assert not marker.exists()


# --- manifest paths stay inside the root --------------------------------------------------

segment = st.sampled_from(["..", ".", "a", "b.mid", "", "..a", "x..", "~"])


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(segment, min_size=1, max_size=8))
def test_relative_to_root_never_escapes(tmp_path_factory, parts):
    root = Path("/corpus/root")
    candidate = root.joinpath(*parts)
    try:
        rel = relative_to_root(candidate, root)
    except ValueError as exc:
        assert "outside the corpus root" in str(exc)
        assert not os.path.abspath(candidate).startswith(str(root) + os.sep)
        return
    assert not rel.startswith("/")
    assert ".." not in rel.split("/")
    assert os.path.abspath(root / rel) == os.path.abspath(candidate)


def test_relative_to_root_refuses_siblings_and_absolute_paths():
    with pytest.raises(ValueError, match="outside the corpus root"):
        relative_to_root("/corpus/root-evil/x.mid", "/corpus/root")
    with pytest.raises(ValueError, match="outside the corpus root"):
        relative_to_root("/etc/passwd", "/corpus/root")
    with pytest.raises(ValueError, match="outside the corpus root"):
        relative_to_root("/corpus/root/../x.mid", "/corpus/root")
    assert relative_to_root("/corpus/root/a/./b.mid", "/corpus/root") == "a/b.mid"


def test_symlink_out_of_the_root_keeps_its_own_manifest_path(tmp_path):
    """A link inside the corpus to a file elsewhere is named by the link, not its target."""
    outside = tmp_path / "elsewhere.mid"
    outside.write_bytes(b"MThd")
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.mid").symlink_to(outside)
    assert relative_to_root(root / "link.mid", root) == "link.mid"


# --- servers stay local -------------------------------------------------------------------

CONFIG_GLOBS = ("prefect.yaml", "Makefile", "docs/**/*.md", "README.md", ".ci/*", "*.toml")


def repo_text_files() -> list[Path]:
    files: set[Path] = set()
    for pattern in CONFIG_GLOBS:
        files |= {p for p in REPO.glob(pattern) if p.is_file()}
    for directory in ("flows", "tasks", "tests", "bench"):
        files |= set((REPO / directory).rglob("*.py"))
    return sorted(files)


def test_prefect_server_binds_loopback_by_default():
    from prefect.settings import get_current_settings

    assert get_current_settings().server.api.host == "127.0.0.1"


def test_no_config_or_doc_starts_a_server_on_all_interfaces():
    """Every `prefect server start` we ship binds 127.0.0.1 (or keeps the default, which is
    127.0.0.1); nothing sets the server host to a public address. A document may show how to
    opt in to another address, as long as it also states the loopback default."""
    problems = []
    start = re.compile(r"prefect\s+server\s+start(?P<args>[^\n`\"']*)")
    for path in repo_text_files():
        if path == Path(__file__).resolve():
            continue
        text = path.read_text(errors="replace")
        documented_opt_in = path.suffix == ".md" and "binds **127.0.0.1**" in text
        for match in start.finditer(text):
            host = re.search(r"--host[ =](\S+)", match.group("args"))
            public = host and host.group(1).strip("'\"") not in {"127.0.0.1", "localhost", "::1"}
            if public and not documented_opt_in:
                problems.append(f"{path}: {match.group(0).strip()}")
        for line in text.splitlines():
            if re.search(r"PREFECT_SERVER_API_HOST\s*[=:]\s*['\"]?0\.0\.0\.0", line):
                problems.append(f"{path}: {line.strip()}")
    assert not problems, "\n".join(problems)


def test_local_dask_cluster_binds_loopback():
    from flows.runners import make_task_runner

    runner = make_task_runner("dask", workers=2)
    host = (runner.cluster_kwargs or {}).get("host")
    assert host in (None, "127.0.0.1", "localhost")
    if host is None:
        import inspect

        from distributed import LocalCluster

        # LocalCluster picks 127.0.0.1 itself when no host is given.
        assert '"127.0.0.1"' in inspect.getsource(LocalCluster.__init__)


# --- limits: a hostile file is a rejection, not an out-of-memory ----------------------------

MAX_CHILD_RSS = 1536 << 20
BOMB_TIMEOUT_S = 60

READ_BOMB = """
import sys, json, re
from pathlib import Path
from datasets.io import RejectedInput
track, path = sys.argv[1], Path(sys.argv[2])
try:
    if track == "symbolic":
        from datasets.symbolic.corpus import read_piece
        from flows.symbolic import SymbolicParams
        params = SymbolicParams()
        if path.stat().st_size > params.max_file_bytes:
            raise RejectedInput(path, "over max_file_bytes")
        read_piece(path, params.max_notes)
    else:
        from datasets.audio.files import load_audio
        from flows.audio import AudioParams
        params = AudioParams()
        load_audio(path, params.hr_rate, params.max_file_bytes, params.max_seconds)
    outcome = {"status": "ok"}
except RejectedInput as exc:
    outcome = {"status": "rejected", "reason": exc.reason}
status = Path("/proc/self/status").read_text()
outcome["peak_bytes"] = int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) * 1024
print(json.dumps(outcome))
"""


def test_limits_are_flow_parameters_with_finite_defaults():
    require_module("flows/symbolic.py")
    require_module("flows/audio.py")
    from flows.audio import AudioParams
    from flows.symbolic import SymbolicParams

    symbolic, audio = SymbolicParams(), AudioParams()
    assert 0 < symbolic.max_file_bytes <= 1 << 30
    assert symbolic.max_notes is not None
    assert 0 < symbolic.max_notes <= 10_000_000
    assert 0 < audio.max_file_bytes <= 4 << 30
    assert audio.max_seconds is not None
    assert 0 < audio.max_seconds <= 4 * 3600


@pytest.mark.parametrize("track", ["symbolic", "audio"])
def test_bombs_are_rejected_within_bounded_memory(tmp_path, track):
    """Each bomb is read in a child process with the flow's default limits: it must come back
    as a rejection, and the child's peak memory must stay bounded."""
    require_module(f"flows/{track}.py")
    entries = build_corpus(tmp_path / "corpus", track)
    for entry in entries:
        if entry.kind not in BOMBS[track]:
            continue
        try:
            result = subprocess.run(
                [sys.executable, "-c", READ_BOMB, track, str(entry.path)],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=BOMB_TIMEOUT_S,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{entry.kind}: not rejected within {BOMB_TIMEOUT_S} s (no limit?)")
        assert result.returncode == 0, f"{entry.kind}: {result.stderr[-2000:]}"
        outcome = json.loads(result.stdout.strip().splitlines()[-1])
        assert outcome["status"] == "rejected", f"{entry.kind}: {outcome}"
        # The child reads its own high-water mark (VmHWM, reset by exec). Not ru_maxrss: a
        # child inherits the parent's across fork, and RUSAGE_CHILDREN also counts other tests'
        # child processes that subprocess reaps in passing.
        peak = outcome["peak_bytes"]
        assert peak < MAX_CHILD_RSS, f"{entry.kind}: peak RSS {peak >> 20} MiB"
