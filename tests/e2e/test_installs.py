"""The installs a user or an image build makes, each into a scratch venv and run from outside
the checkout: `pip install .`, `pip install -e .`, and each image's `pip install .` from a
build context assembled exactly as its Dockerfile's COPY lines and .dockerignore allow.

No Docker engine is needed: the build stage's Python install is what breaks when a package
folder is missing from the context. The scratch venvs borrow the test venv's dependencies
(a path entry, no network) and install the project itself with --no-deps."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGES = {
    "runtime": REPO / "images/runtime/Dockerfile",
    "operator": REPO / "images/operator/Dockerfile",
}
ROUTER_IMPORTS = (
    "import routermesh.operator.handlers, routermesh.operator.reconcile, "
    "routermesh.runtime.app, routermesh.local; print('imports ok')"
)


def _scratch_venv(root: Path) -> Path:
    """A venv whose own site-packages comes first and that sees the test venv's packages
    after it, so the project under test is the scratch install, never the checkout."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin/python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _pip_install(python: Path, *target: str, cwd: Path) -> None:
    done = subprocess.run(  # noqa: PLW1510 - the return code is asserted
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-cache-dir",
            *target,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _run(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: PLW1510 - the return code is asserted
        [str(python), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def _cli(python: Path) -> Path:
    return python.parent / "router-mesh"


def _assert_router_works(python: Path, cwd: Path) -> None:
    imported = _run(python, "-c", ROUTER_IMPORTS, cwd=cwd)
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert "imports ok" in imported.stdout
    helped = subprocess.run(  # noqa: PLW1510 - the return code is asserted
        [str(_cli(python)), "--help"], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0, helped.stderr[-2000:]
    for command in ("local", "operator", "orchestrator", "serve-model", "fetch-models"):
        assert command in helped.stdout
    # The operator's own command builds its parser and imports kopf's handlers.
    operator = subprocess.run(  # noqa: PLW1510 - the return code is asserted
        [str(_cli(python)), "crds", "--dir", str(REPO / "crds"), "check"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert operator.returncode == 0, operator.stdout + operator.stderr


def _clean_clone(into: Path) -> Path:
    """The checkout's files as a clone has them (tracked and new, not ignored): a build
    leaves its build/ folder there, not in the working tree, and never reads a stale one."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for relative in filter(None, listed.split("\0")):
        source = REPO / relative
        if source.is_file():
            target = into / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return into


@pytest.mark.parametrize("editable", [False, True], ids=["pip-install", "pip-install-e"])
def test_a_plain_install_of_the_checkout_gives_a_working_cli_operator_and_bench(
    tmp_path: Path, editable: bool
) -> None:
    checkout = _clean_clone(tmp_path / "checkout")
    python = _scratch_venv(tmp_path / "venv")
    _pip_install(python, *(["-e", str(checkout)] if editable else [str(checkout)]), cwd=tmp_path)
    _assert_router_works(python, cwd=tmp_path)
    bench = _run(python, "-c", "import routermesh_bench.commands; print('bench ok')", cwd=tmp_path)
    assert bench.returncode == 0, bench.stderr[-2000:]
    location = _run(
        python, "-c", "import routermesh.operator as m; print(m.__file__)", cwd=tmp_path
    )
    if editable:
        assert location.stdout.strip() == str(checkout / "src/routermesh/operator/__init__.py")
    else:
        assert location.stdout.strip().startswith(str(tmp_path / "venv"))


def _dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rules for what this file uses: a pattern matches the path or any parent of
    it; ``**/`` matches any number of folders (no ``!`` exceptions are used here)."""
    assert not any(p.startswith("!") for p in patterns), "exceptions are not modelled"
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(prefix.rsplit("/", 1)[-1], bare):
                return True
    return False


def _build_stage_copies(dockerfile: Path) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the context, in the build stage (before the
    last FROM); the destination is relative to WORKDIR /src."""
    text = dockerfile.read_text().replace("\\\n", " ")
    lines = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    froms = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    copies = []
    for line in lines[froms[0] : froms[-1]]:
        op, _, rest = line.partition(" ")
        if op.upper() == "COPY" and not rest.startswith("--from"):
            *sources, destination = rest.split()
            copies.append((sources, destination))
    return copies


def _assemble_context(dockerfile: Path, into: Path) -> None:
    """What the Dockerfile's build stage sees in WORKDIR: each COPY's sources from the
    context, less what .dockerignore removes from the context."""
    patterns = _dockerignore()
    for sources, destination in _build_stage_copies(dockerfile):
        for source in sources:
            origin = REPO / source
            assert origin.exists(), f"{dockerfile.name}: COPY {source}: not in the context"
            files = (
                [origin]
                if origin.is_file()
                else sorted(p for p in origin.rglob("*") if p.is_file())
            )
            for file in files:
                relative = file.relative_to(REPO).as_posix()
                if _ignored(relative, patterns):
                    continue
                if origin.is_file():
                    target = (
                        into / destination / file.name
                        if destination.endswith("/")
                        else into / destination
                    )
                else:
                    target = into / destination / file.relative_to(origin)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, target)


def test_the_dockerignore_model_matches_docker_rules() -> None:
    patterns = [".git", "**/__pycache__", "bench", "*.egg-info"]
    assert _ignored("bench/routermesh_bench/load.py", patterns)
    assert _ignored("src/routermesh/runtime/__pycache__/app.cpython-311.pyc", patterns)
    assert _ignored("router_mesh.egg-info/PKG-INFO", patterns)
    assert not _ignored("src/routermesh/runtime/app.py", patterns)
    assert not _ignored("scripts/bench.sh", patterns)


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_each_image_installs_from_its_own_build_context(tmp_path: Path, image: str) -> None:
    context = tmp_path / "src"
    _assemble_context(IMAGES[image], context)
    assert not (context / "bench").exists()  # the benchmarks stay out of the images
    python = _scratch_venv(tmp_path / "venv")
    _pip_install(python, ".", cwd=context)
    _assert_router_works(python, cwd=tmp_path)
    absent = _run(python, "-c", "import routermesh_bench", cwd=tmp_path)
    assert absent.returncode != 0 and "No module named 'routermesh_bench'" in absent.stderr
    bench = subprocess.run(  # noqa: PLW1510 - the return code is asserted
        [str(_cli(python)), "bench", "quality"], cwd=tmp_path, capture_output=True, text=True
    )
    assert bench.returncode == 2
    assert "not installed in this environment" in bench.stderr
