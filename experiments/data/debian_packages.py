"""Debian packages as a data source: `apt-get download` them into a cache folder and unpack them with `dpkg-deb -x`.

Real parallel text ships inside Debian packages (LibreOffice's translated help and UI, SWORD Bible modules; see
shared/DATA.md). Neither command needs root, and unpacking instead of installing keeps the packages' heavy
dependencies off the machine. Each package is unpacked into the same folder, so the result has the layout of an
installed system (usr/share/..., usr/lib/...) and a user who unpacked or installed the packages already can pass that
folder (or "/") as `source_dir` instead.
"""
import glob
import os
import shutil
import subprocess

from experiments.errors import MissingDataError


def _run(command: list[str], cwd: str) -> subprocess.CompletedProcess:
  return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def _first_error_line(output: str) -> str:
  lines = [line.strip() for line in output.splitlines() if line.strip()]
  errors = [line for line in lines if line.startswith("E:")]
  return (errors or lines or ["no output"])[0]


def download(packages: list[str], cache_dir: str, hint: str) -> list[str]:
  """Paths of the .deb files of `packages` in `cache_dir`, fetched with `apt-get download` unless already there."""
  os.makedirs(cache_dir, exist_ok=True)
  missing = [name for name in packages if not glob.glob(os.path.join(cache_dir, f"{name}_*.deb"))]
  if missing:
    if shutil.which("apt-get") is None:
      raise MissingDataError(f"apt-get not found, so {' '.join(missing)} cannot be downloaded: {hint}")
    result = _run(["apt-get", "download", *missing], cache_dir)
    if result.returncode != 0:
      error = _first_error_line(result.stderr + result.stdout)
      if "Unable to locate" in error:
        error += " (the package lists are missing or stale: run `apt-get update` as root first)"
      raise MissingDataError(f"`apt-get download {' '.join(missing)}` failed: {error}; {hint}")
  return [sorted(glob.glob(os.path.join(cache_dir, f"{name}_*.deb")))[-1] for name in packages]


def unpacked(packages: list[str], cache_dir: str, hint: str) -> str:
  """A folder holding the files of `packages` as installed (usr/...), downloading and unpacking them on first use."""
  root = os.path.join(cache_dir, "unpacked")
  done = os.path.join(root, ".unpacked-" + "+".join(sorted(packages)))
  if os.path.exists(done):
    return root
  debs = download(packages, cache_dir, hint)
  if shutil.which("dpkg-deb") is None:
    raise MissingDataError(f"dpkg-deb not found, so {' '.join(debs)} cannot be unpacked: {hint}")
  os.makedirs(root, exist_ok=True)
  for deb in debs:
    result = _run(["dpkg-deb", "-x", deb, root], cache_dir)
    if result.returncode != 0:
      raise MissingDataError(f"`dpkg-deb -x {deb}` failed: {_first_error_line(result.stderr)}; {hint}")
  open(done, "w").close()  # unpacking is interrupted rarely, but a half-unpacked folder must not count as done
  return root
