"""``XLA_FLAGS`` that advjax sets for you, only where the installed jaxlib knows them.

XLA parses ``XLA_FLAGS`` once, when JAX creates its first backend, and *aborts the process* on a
flag it does not know (``Unknown flags in XLA_FLAGS``). Flags come and go between jaxlib releases
(``--xla_cpu_experimental_*`` above all), so a flag the CLI sets by default must be checked
against the installed jaxlib, not against the version advjax was measured with.
:func:`known` looks for the flag's name in jaxlib's XLA library (every flag XLA registers is a
string in it); the answer is cached per library file (path, size, mtime) in
``$XDG_CACHE_HOME/advjax/xla_flags.json``, since a miss reads the whole ~300 MB library once.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import mmap
import os
import pathlib
import sys

__all__ = ["known", "add", "backend_initialized"]


def _libraries() -> list[pathlib.Path]:
    spec = importlib.util.find_spec("jaxlib")
    if spec is None or not spec.origin:
        return []
    d = pathlib.Path(spec.origin).parent
    # libjax_common.so holds XLA in recent jaxlibs; older ones linked it into xla_extension.so
    libs = sorted(d.glob("libjax_common*.so*")) + sorted(d.glob("xla_extension*.so*")) + sorted(d.glob("_jax*.so"))
    return [p for p in libs if p.is_file()]


def _cache_file() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "advjax" / "xla_flags.json"


def _scan(path: pathlib.Path, name: str) -> bool:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        return mm.find(name.encode()) >= 0


@functools.lru_cache(maxsize=None)
def known(flag: str, libraries: tuple | None = None) -> bool:
    """Whether the installed jaxlib's XLA registers ``flag`` (``"--xla_foo=1"``, ``"xla_foo"``).

    False when no XLA library is found (then nothing is set: an unknown flag would abort XLA).
    ``libraries`` overrides the files searched (tests)."""
    name = flag.lstrip("-").split("=", 1)[0].strip()
    if not name:
        raise ValueError(f"xla_flags.known: {flag!r} is not an XLA flag (expected e.g. '--xla_gpu_deterministic_ops')")
    libs = [pathlib.Path(p) for p in libraries] if libraries is not None else _libraries()
    use_cache = libraries is None
    cache_path = _cache_file()
    cache: dict = {}
    if use_cache:
        try:
            cache = json.loads(cache_path.read_text())
        except (OSError, ValueError):
            cache = {}
    found = False
    dirty = False
    for lib in libs:
        st = lib.stat()
        key = f"{lib}:{st.st_size}:{int(st.st_mtime)}"
        entry = cache.setdefault(key, {}) if use_cache else {}
        if name not in entry:
            entry[name] = _scan(lib, name)
            dirty = True
        if entry[name]:
            found = True
            break
    if use_cache and dirty:
        try:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache))
            os.replace(tmp, cache_path)
        except OSError:
            pass  # a read-only home: the scan is repeated next time
    return found


def backend_initialized() -> bool:
    """Whether JAX has already created a backend (after which ``XLA_FLAGS`` is no longer read)."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(getattr(xla_bridge, "_backends", {}))
    except Exception:  # noqa: BLE001 -- private API moved: assume the worst
        return True


def add(flag: str, *, env: dict | None = None) -> bool:
    """Append ``flag`` (``"--name=value"``) to ``XLA_FLAGS`` if the user has not set that flag and
    the installed jaxlib knows it. Returns whether the flag is now in effect (set by the user or by
    this call); has no effect once a JAX backend exists, so call it before the first computation."""
    env = os.environ if env is None else env
    name = flag.lstrip("-").split("=", 1)[0]
    current = env.get("XLA_FLAGS", "")
    if name in current:
        return True
    if backend_initialized() or not known(flag):
        return False
    env["XLA_FLAGS"] = (current + " " + flag).strip()
    return True
