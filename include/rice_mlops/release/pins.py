"""Hash-pinned requirement files: read them, derive serving.txt from the lock, and check a
directory of wheels against them.

Standard library only, so `scripts/lock.sh` can run it with any Python before a venv exists:
    python3 include/rice_mlops/release/pins.py serving [--lock requirements/lock.txt]
        [--serving requirements/serving.txt]     # re-hash serving.txt from the lock
    python3 include/rice_mlops/release/pins.py strip FILE  # plain name==version lines (constraints)
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Pin:
    name: str
    version: str
    hashes: set[str] = field(default_factory=set)

    def lines(self) -> str:
        hashes = "".join(f" \\\n    --hash=sha256:{h}" for h in sorted(self.hashes))
        return f"{self.name}=={self.version}{hashes}\n"


def parse(path: Path) -> dict[str, Pin]:
    """canonical name -> Pin, for `name==version` lines with or without `--hash` options."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        match = _PIN.match(line)
        if match:
            current = Pin(match.group(1), match.group(3))
            pins[canonical(current.name)] = current
        elif not line.startswith("--hash") or current is None:
            raise ValueError(f"{path}: cannot read the line {raw.strip()!r}; expected "
                             "name==version with optional --hash=sha256:... options")
        if current is not None:
            current.hashes.update(_HASH.findall(line))
    return pins


def write_serving(lock: Path, serving: Path) -> int:
    """Rewrite `serving` with the lock's hashes for each of its pins: serving.txt names what
    the image installs, the lock vouches for the content. Plain `name==version` lines added by
    hand are hashed the same way. Returns the number of pins."""
    locked = parse(lock)
    header = [line for line in serving.read_text().splitlines() if line.startswith("#")]
    out, problems = [], []
    for key, pin in parse(serving).items():
        source = locked.get(key)
        if source is None or source.version != pin.version:
            found = f"the lock has {source.version}" if source else "the lock does not have it"
            problems.append(f"{pin.name}=={pin.version} ({found})")
        elif not source.hashes:
            problems.append(f"{pin.name}=={pin.version} (no hash in the lock)")
        else:
            out.append(Pin(pin.name, pin.version, set(source.hashes)).lines())
    if problems:
        raise SystemExit(f"{serving}: not pinned by {lock}: " + "; ".join(problems) +
                         ". Add them to requirements/base.in (or use the lock's version) and "
                         "run `make lock`")
    serving.write_text("\n".join(header) + "\n" + "".join(out))
    return len(out)


def wheel_pin(filename: str) -> tuple[str, str]:
    """(canonical name, version) of a wheel file name (PEP 427)."""
    parts = filename[:-len(".whl")].split("-")
    if not filename.endswith(".whl") or len(parts) < 5:
        raise ValueError(f"{filename} is not a wheel file name")
    return canonical(parts[0]), parts[1]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def unverified_wheels(directory: Path, *requirements: Path) -> list[str]:
    """What in `directory` the hash-pinned `requirements` do not vouch for: wheels whose
    sha256 is not listed for their name and version, unknown wheels, and pins with no wheel.
    Empty means every wheel is exactly what the lock names."""
    pins: dict[str, Pin] = {}
    for path in requirements:
        pins.update(parse(path))
    problems, seen = [], set()
    for wheel in sorted(directory.glob("*.whl")):
        name, version = wheel_pin(wheel.name)
        pin = pins.get(name)
        if pin is None or pin.version != version:
            problems.append(f"{wheel.name}: not in the requirements")
        elif sha256(wheel) not in pin.hashes:
            problems.append(f"{wheel.name}: sha256 does not match the lock")
        else:
            seen.add(name)
    problems += [f"{pin.name}=={pin.version}: no wheel" for key, pin in pins.items()
                 if key not in seen]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serving", help="re-hash serving.txt from the lock")
    serving.add_argument("--lock", type=Path, default=Path("requirements/lock.txt"))
    serving.add_argument("--serving", type=Path, default=Path("requirements/serving.txt"))
    strip = commands.add_parser("strip", help="print plain name==version lines")
    strip.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    if args.command == "serving":
        count = write_serving(args.lock, args.serving)
        print(f"lock: {count} hashed pins in {args.serving}")
    else:
        sys.stdout.write("".join(f"{p.name}=={p.version}\n" for p in parse(args.file).values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
