"""What a Ray job uploads: only the files the spec names (data, DeepSpeed file), never models or unrelated files,
nothing when its locations are URIs or node paths; lint reports the upload size against Ray's 100 MiB limit.

The spec folders hold big unrelated files made sparse with truncate (no disk, no time). Which files travel is
checked with Ray's own packaging code (the zip `ray job submit` uploads), and once on a real cluster.
"""

from __future__ import annotations

import json
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from ftc.backends.ray import UPLOAD_LIMIT, RayBackend, upload_only
from ftc.compiler.build import build_plan, compile_spec, load_resolved
from ftc.contract import RAY_JOB_ENV
from ftc.spec.rules import Finding
from tests.backends.ray_cluster import SECRET_NAME, RayCluster, ray_cluster  # noqa: F401  (the cluster fixture)

MIB = 1024**2
PYTHON = sys.executable
ROWS = '{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n'


def sparse(path: Path, size: int) -> Path:
    """A file of `size` bytes that takes no disk (truncate)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.truncate(size)
    return path


def project(root: Path, spec: str = "", data: str = "data") -> Path:
    """A spec folder with small data files, a 300 MiB model folder and 300 MiB of unrelated files; returns the spec."""
    (root / data).mkdir(parents=True, exist_ok=True)
    for name in ("train.jsonl", "validation.jsonl"):
        (root / data / name).write_text(ROWS)
    sparse(root / "models" / "big" / "model.safetensors", 150 * MIB)
    sparse(root / "data" / "unrelated.bin", 150 * MIB)
    sparse(root / "other" / "notes.bin", 1 * MIB)
    text = spec or (
        "task: text_classification\nmodel: /models/big\n"
        f"data: {{train_file_path: {data}/train.jsonl, validation_file_path: {data}/validation.jsonl}}\n"
        "checkpointing: {output_dir: /shared/out}\n"
    )
    (root / "spec.yaml").write_text(text)
    return root / "spec.yaml"


def compiled(spec: Path) -> tuple[Path, dict[str, Any]]:
    (folder,) = compile_spec(spec, ["ray"], spec.parent / "build")
    return folder, yaml.safe_load((folder / "job.yaml").read_text())["submit_job"]["runtime_env"]


def packed(folder: Path, env: dict[str, Any], include_gitignore: bool = True) -> list[str]:
    """The files Ray's own packaging puts in the job's working_dir zip, with job.yaml's runtime_env."""
    from ray._private.runtime_env.packaging import create_package

    with tempfile.TemporaryDirectory() as temp:
        zip_path = Path(temp) / "package.zip"
        root = str((folder / env["working_dir"]).resolve())
        create_package(root, zip_path, excludes=env["excludes"], include_gitignore=include_gitignore)
        return sorted(zipfile.ZipFile(zip_path).namelist())


def ray_findings(spec: Path) -> list[Finding]:
    return RayBackend().check(build_plan(load_resolved(spec), "ray", "../.."))


def test_only_the_named_data_files_travel(tmp_path: Path) -> None:
    folder, env = compiled(project(tmp_path))
    assert env["working_dir"] == "../.."
    assert packed(folder, env) == ["data/train.jsonl", "data/validation.jsonl"]
    assert ray_findings(tmp_path / "spec.yaml") == []  # 600 MiB in the folder, a few bytes uploaded
    assert "all but the 2 data or" in (folder / "job.yaml").read_text()


def test_a_rayignore_on_the_way_to_a_data_file_is_reported(tmp_path: Path) -> None:
    """Ray applies .rayignore on top of the excludes (the data file would not travel); .gitignore is not applied
    when ftc submits (RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1), so a gitignored data folder is no finding."""
    spec = project(tmp_path)
    (tmp_path / ".gitignore").write_text("data/\n")
    folder, env = compiled(spec)
    assert packed(folder, env) == []  # what the SDK would upload without Ray's switch
    assert packed(folder, env, include_gitignore=False) == ["data/train.jsonl", "data/validation.jsonl"]
    assert ray_findings(spec) == []
    (tmp_path / "data" / ".rayignore").write_text("validation.jsonl\n")
    assert packed(folder, env, include_gitignore=False) == ["data/train.jsonl"]
    found = {f.key: f.message for f in ray_findings(spec) if f.rule == "FTC415"}
    assert set(found) == {"data.train_file_path", "data.validation_file_path"}  # both lie under it
    assert found["data.validation_file_path"].startswith(f"{tmp_path / 'data' / '.rayignore'} may leave out")


def test_odd_file_names_travel_as_they_are(tmp_path: Path) -> None:
    """Names with gitignore's special characters are matched literally, not as patterns."""
    odd = ["we[ir]d*/f?.jsonl", "!bang/#hash.jsonl", "trailing /space .jsonl", "back\\slash/x.jsonl"]
    for name in odd:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(ROWS)
    (tmp_path / "we[ir]d*" / "fx.jsonl").write_text(ROWS)  # what f?.jsonl would match as a pattern
    (tmp_path / "weird" / "f1.jsonl").parent.mkdir()
    (tmp_path / "weird" / "f1.jsonl").write_text(ROWS)
    env = {"working_dir": ".", "excludes": upload_only(sorted(odd))}
    assert packed(tmp_path, env) == sorted(odd)


def test_deepspeed_file_and_preprocess_folder_travel_when_read(tmp_path: Path) -> None:
    project(tmp_path)
    ds = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "zero_optimization": {"stage": 2}}
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    (tmp_path / "prep").mkdir()
    (tmp_path / "prep" / "test.jsonl").write_text(ROWS)
    head = "task: text_classification\nmodel: /models/big\ncheckpointing: {output_dir: /shared/out}\n"
    reads = head + (
        "data: {train_file_path: data/train.jsonl, preprocess_output: prep}\n"  # validation and test from prep/
        "deepspeed: {apply_deepspeed: true, deepspeed: ds.json}\n"
    )
    folder, env = compiled(project(tmp_path, reads))
    assert packed(folder, env) == ["data/train.jsonl", "ds.json", "prep/test.jsonl"]
    unread = head + (
        "data: {train_file_path: data/train.jsonl, validation_file_path: data/validation.jsonl, "
        "test_file_path: data/train.jsonl, preprocess_output: prep}\n"  # every split has its file: prep/ is unread
        "deepspeed: {apply_deepspeed: false, deepspeed: ds.json}\n"
    )
    folder, env = compiled(project(tmp_path, unread))
    assert packed(folder, env) == ["data/train.jsonl", "data/validation.jsonl"]


@pytest.mark.parametrize(
    "data",
    [
        "{train_file_path: 's3://bucket/train.jsonl', validation_file_path: 's3://bucket/validation.jsonl'}",
        "{train_file_path: /shared/data/train.jsonl}",
    ],
)
def test_nothing_travels_without_local_files(tmp_path: Path, data: str) -> None:
    spec = project(tmp_path, f"task: text_classification\nmodel: /models/big\ndata: {data}\ncheckpointing: {{output_dir: /o}}\n")
    folder, env = compiled(spec)
    assert "working_dir" not in env and "excludes" not in env
    assert json.loads(env["env_vars"][RAY_JOB_ENV])["spec_root"] == "."
    assert "# Nothing is uploaded" in (folder / "job.yaml").read_text()


@pytest.mark.parametrize(("size", "severity"), [(120 * MIB, "error"), (60 * MIB, "warning"), (40 * MIB, None)])
def test_lint_reports_the_upload_size(tmp_path: Path, size: int, severity: str | None) -> None:
    spec = project(tmp_path)
    sparse(tmp_path / "data" / "train.jsonl", size)
    found = [f for f in ray_findings(spec) if f.rule == "FTC412"]
    if severity is None:
        assert found == []
        return
    (finding,) = found
    assert (finding.severity, finding.key) == (severity, "data.train_file_path")
    assert f"{size / MIB:.1f} MiB" in finding.message and "data/train.jsonl" in finding.message
    assert "unrelated.bin" not in finding.message and "model.safetensors" not in finding.message
    assert (severity == "error") == (size > UPLOAD_LIMIT)


def test_a_named_folder_is_measured_file_by_file(tmp_path: Path) -> None:
    """preprocess_output travels whole: its files count, symlinks followed, a link loop counted once."""
    spec = project(tmp_path)
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl"):
        sparse(tmp_path / "prep" / name, 40 * MIB)
    (tmp_path / "prep" / "loop").symlink_to(tmp_path / "prep", target_is_directory=True)
    named = "data: {train_file_path: data/train.jsonl, validation_file_path: data/validation.jsonl}"
    spec.write_text(spec.read_text().replace(named, "data: {preprocess_output: prep}"))
    (finding,) = [f for f in ray_findings(spec) if f.rule == "FTC412"]
    assert finding.severity == "error" and "120.0 MiB" in finding.message and finding.key == "data.preprocess_output"


@pytest.mark.parametrize(
    ("model", "fires"),
    [("./models/big", True), ("models/big", True), ("/models/big", False), ("bert-base-uncased", False), ("s3://b/m", False)],
)
def test_a_relative_model_folder_is_not_uploaded(tmp_path: Path, model: str, fires: bool) -> None:
    spec = project(tmp_path)
    spec.write_text(spec.read_text().replace("model: /models/big", f"model: {model}"))
    found = {f.key: f for f in ray_findings(spec) if f.rule == "FTC413"}
    assert ("model.model_selector_output" in found) == fires
    folder, env = compiled(spec)
    assert not any("models" in name for name in packed(folder, env))


def test_a_file_outside_the_working_dir_is_an_error(tmp_path: Path) -> None:
    spec = project(tmp_path / "project")
    spec.write_text(spec.read_text() + "targets: {ray: {working_dir: data}}\n")
    spec.write_text(spec.read_text().replace("data/validation.jsonl", "other/v.jsonl"))
    found = [f for f in ray_findings(spec) if f.rule == "FTC414"]
    assert [(f.severity, f.key) for f in found] == [("error", "data.validation_file_path")]
    assert "outside targets.ray.working_dir (data)" in found[0].message


def test_a_remote_output_dir_is_not_relative(tmp_path: Path) -> None:
    spec = project(tmp_path)
    spec.write_text(spec.read_text().replace("output_dir: /shared/out", "output_dir: 's3://bucket/runs'"))
    assert "FTC406" not in {f.rule for f in ray_findings(spec)}
    _, env = compiled(spec)
    assert not any("s3" in pattern for pattern in env["excludes"])


# --------------------------------------------------------------------------- on a Ray cluster

_LIST_FILES = """\
import json, os, sys
files = sorted(os.path.relpath(os.path.join(d, f)) for d, _, names in os.walk('.') for f in names)
with open(os.environ['FTC_FAKE_OUT'], 'w') as out:
    json.dump(files, out)
"""


@pytest.mark.ray
def test_a_job_in_a_folder_of_600_mib_uploads_its_data_only(ray_cluster: RayCluster, tmp_path: Path) -> None:
    """The spec's folder holds 300 MiB of model and unrelated data (a whole-folder upload: 413); the job starts
    and finds exactly its data files in its working dir. Its python is a stand-in that lists them."""
    record, python = tmp_path / "files.json", tmp_path / "python"
    python.write_text(f"#!{PYTHON}\n{_LIST_FILES}")
    python.chmod(0o755)
    spec = project(tmp_path / "project")
    (tmp_path / "project" / ".gitignore").write_text("data/\n*.jsonl\n")  # as many projects have: not applied
    spec.write_text(
        spec.read_text()
        + f"env: {{vars: {{FTC_FAKE_OUT: {json.dumps(str(record))}}}, secrets: [{SECRET_NAME}]}}\n"
        + f"targets: {{ray: {{python: {json.dumps(str(python))}}}}}\n"
    )
    command = [PYTHON, "-m", "ftc.cli", "submit", str(spec), "--target", "ray", "--address", ray_cluster.dashboard]
    result = ray_cluster.run(command, cwd=tmp_path, timeout=300, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert json.loads(record.read_text()) == ["data/train.jsonl", "data/validation.jsonl"]
