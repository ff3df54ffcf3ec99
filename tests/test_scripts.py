"""The setup scripts: every program a test calls is installed by them; the apt mirror is found."""

from __future__ import annotations

import os
import shutil
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts")

# program a test or script runs -> the Debian package scripts/setup.sh must install
PROGRAMS = {
    "nc": "netcat-openbsd",
    "chromium": "chromium",
    "ip": "iproute2",
    "dockerd": "docker.io",
    "debootstrap": "debootstrap",
    "systemd-analyze": "systemd",
}


def script_text() -> str:
    return "\n".join(
        open(os.path.join(SCRIPTS, name)).read()
        for name in sorted(os.listdir(SCRIPTS))
        if name.endswith(".sh")
    )


def test_every_program_the_tests_call_is_installed_by_the_scripts():
    text = script_text()
    for program, package in PROGRAMS.items():
        assert package in text, f"no script installs {package} (for {program})"
        assert shutil.which(program), f"{program} is not installed: run scripts/setup.sh"


def mirror(tmp_path, files: dict[str, str], **env) -> str:
    for name, body in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    run_env = {k: v for k, v in os.environ.items() if k != "JUPYTER_REMOTE_DEBIAN_MIRROR"}
    run_env.update(APT_SOURCES_DIR=str(tmp_path), **env)
    out = subprocess.run(
        [os.path.join(SCRIPTS, "debian-mirror.sh")],
        capture_output=True,
        text=True,
        check=True,
        env=run_env,
        timeout=30,
    )
    return out.stdout.strip()


DEB822 = """Types: deb
# a comment
URIs: http://mirror.corp.example/debian/
Suites: bookworm bookworm-updates
Components: main
"""
SECURITY = """Types: deb
URIs: http://mirror.corp.example/debian-security
Suites: bookworm-security
Components: main
"""


def test_the_mirror_comes_from_a_deb822_sources_file(tmp_path):
    files = {"sources.list.d/a-security.sources": SECURITY, "sources.list.d/debian.sources": DEB822}
    assert mirror(tmp_path, files) == "http://mirror.corp.example/debian"


def test_the_mirror_comes_from_a_one_line_sources_list(tmp_path):
    files = {
        "sources.list": "# old\ndeb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://apt.example/debian bookworm main\n"
    }
    assert mirror(tmp_path, files) == "http://apt.example/debian"


def test_the_environment_overrides_and_debian_is_the_fallback(tmp_path):
    assert mirror(tmp_path, {}) == "http://deb.debian.org/debian"
    files = {"sources.list.d/debian.sources": DEB822}
    assert mirror(tmp_path, files, JUPYTER_REMOTE_DEBIAN_MIRROR="http://o.example/d") == (
        "http://o.example/d"
    )
