"""The container image's root filesystem, mounted read-only, and its entrypoint run in it as a
container runtime would: chrooted, as the image's USER, with the image's environment only.

Used by the image test (test_image.py) and by scripts/build-image, which runs this file to measure
the image's size and start time:

    python3 test/image/image_root.py localhost/vllm-autoscaler:0.1.0 --starts 5   # prints JSON

The image must be in buildah's local storage (vfs), as scripts/build-image leaves it; everything
here needs root (buildah's storage, bind mounts, chroot). The process shares the caller's network
namespace, so it listens on loopback like the other tests' binaries.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "support"))

from support import REPO, Proc  # noqa: E402

BUILDAH = ["buildah", "--storage-driver", "vfs"]
BUILD_HINT = "run scripts/build-image (as root) to build it"


def version() -> str:
    """The project VERSION in CMakeLists.txt, which scripts/build-image tags the image with."""
    text = (REPO / "CMakeLists.txt").read_text()
    m = re.search(r"^project\(vllm_autoscaler VERSION ([0-9.]+)", text, re.M)
    assert m, "no project VERSION in CMakeLists.txt"
    return m.group(1)


def default_image() -> str:
    return os.environ.get("VA_IMAGE", f"localhost/vllm-autoscaler:{version()}")


def buildah(*args: str) -> str:
    done = subprocess.run([*BUILDAH, *args], capture_output=True, text=True,
                          env={**os.environ, "STORAGE_DRIVER": "vfs"})
    if done.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args)}: exit {done.returncode}: "
                           f"{done.stderr.strip()}")
    return done.stdout.strip()


def image_config(image: str) -> dict:
    """The OCI config of `image` (User, Entrypoint, Env, ExposedPorts …); raises LookupError with
    what to do when the image is not in the local storage."""
    try:
        return json.loads(buildah("inspect", "--type", "image", image))["OCIv1"]["config"]
    except RuntimeError as e:
        raise LookupError(f"image {image} is not in buildah's local storage (vfs): {BUILD_HINT}"
                          f" ({e})") from None


class ImageRoot:
    """`with ImageRoot(image) as root:` a working container of `image` (`buildah from`), its root
    filesystem mounted (`buildah mount`) and bind-mounted again read-only at `root.path`; all of it
    undone on exit, whatever happened."""

    def __init__(self, image: str):
        self.image = image
        self.config = image_config(image)
        self.container = ""
        self.path: pathlib.Path | None = None
        self._bound = False

    def __enter__(self) -> "ImageRoot":
        try:
            self.container = buildah("from", "--pull=never", "--quiet", "--name",
                                     f"va-image-test-{uuid.uuid4().hex[:12]}", self.image)
            source = buildah("mount", self.container)
            self.path = pathlib.Path(tempfile.mkdtemp(prefix="va-image-root-"))
            subprocess.run(["mount", "--bind", source, self.path], check=True)
            self._bound = True
            subprocess.run(["mount", "-o", "remount,ro,bind", self.path], check=True)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        errors = []
        if self._bound:
            if subprocess.run(["umount", self.path]).returncode != 0:
                subprocess.run(["umount", "-l", self.path])
            self._bound = False
        if self.path is not None:
            try:
                self.path.rmdir()
            except OSError as e:
                errors.append(f"rmdir {self.path}: {e}")
            self.path = None
        if self.container:
            for args in (("umount", self.container), ("rm", self.container)):
                try:
                    buildah(*args)
                except RuntimeError as e:
                    errors.append(str(e))
            self.container = ""
        if errors:
            raise RuntimeError("; ".join(errors))

    def user(self) -> str:
        """The image's USER as uid:gid (numeric, as the Deployment's runAsNonRoot needs)."""
        user = self.config.get("User", "")
        assert re.fullmatch(r"\d+:\d+", user), f"image USER {user!r} is not a numeric uid:gid"
        return user

    def command(self, *args, user: str | None = None) -> list[str]:
        """argv that runs the image's entrypoint with `args` in the read-only root, as the
        image's USER (or `user`, "uid:gid"), with exactly the image's environment. `env` and
        `chroot` exec in turn, so the PID started is the entrypoint's."""
        assert self.path is not None
        entrypoint = self.config.get("Entrypoint") or []
        return self.exec_command(*entrypoint, *args, user=user)

    def exec_command(self, *argv, user: str | None = None) -> list[str]:
        """argv that runs `argv` (a path inside the image) as `command` does."""
        assert self.path is not None
        return ["/usr/bin/env", "-i", *self.config.get("Env", []), "HOME=/",
                "/usr/sbin/chroot", f"--userspec={user or self.user()}", str(self.path),
                *map(str, argv)]

    def rootfs_size(self) -> tuple[int, int]:
        """(bytes, files) of the unpacked root filesystem (regular files, counted once)."""
        assert self.path is not None
        total = files = 0
        seen = set()
        for dirpath, _, names in os.walk(self.path):
            for n in names:
                st = os.lstat(os.path.join(dirpath, n))
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
                files += 1
        return total, files


def listening_ports(proc: Proc) -> tuple[int, int] | None:
    """(public, admin) from the proxy's `listening` JSON log line, once it is written."""
    for line in proc.output().splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if doc.get("msg") == "listening":
            return int(doc["public_port"]), int(doc["admin_port"])
    return None


def readyz(port: int) -> int | None:
    """The status of GET /readyz on 127.0.0.1:`port`, None when the connection fails."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def start_ready(root: ImageRoot, *args, timeout: float = 15) -> tuple[Proc, float, int, int]:
    """Starts the image's entrypoint with `args` (which must make it listen on 127.0.0.1 port 0,
    public and admin, logging JSON) and polls, every millisecond, for its `listening` line and then
    for `GET /readyz` 200. Returns (the Proc, seconds from exec to that 200, public port, admin
    port). The Proc is stopped if it never gets there."""
    t0 = time.monotonic()
    proc = Proc(root.command(*args), name="vllm-autoscaler-image")
    try:
        deadline = t0 + timeout
        ports = None
        while True:
            if ports is None:
                ports = listening_ports(proc)
            if ports is not None and readyz(ports[1]) == 200:
                return proc, time.monotonic() - t0, ports[0], ports[1]
            if not proc.alive():
                raise AssertionError(f"the image's vllm-autoscaler exited ({proc.returncode}):\n"
                                     + proc.output()[-4000:])
            if time.monotonic() > deadline:
                raise AssertionError(f"no /readyz 200 within {timeout}s:\n" + proc.output()[-4000:])
            time.sleep(0.001)
    except BaseException:
        proc.stop()
        raise


def measure(image: str, starts: int) -> dict:
    """The image's unpacked size and `starts` start times (exec to /readyz 200), the proxy in
    front of a static upstream nobody listens on (/readyz does not depend on the backend)."""
    with ImageRoot(image) as root:
        size, files = root.rootfs_size()
        times = []
        for _ in range(starts):
            proc, took, _, _ = start_ready(root, "--listen", "127.0.0.1:0", "--admin-listen",
                                           "127.0.0.1:0", "--upstream", "http://127.0.0.1:9",
                                           "--log-format", "json")
            code = proc.stop()
            shutil.rmtree(proc.log_path.parent, ignore_errors=True)
            assert code == 0, f"exit {code} on SIGTERM"
            times.append(took)
    return {"image": image, "rootfs_bytes": size, "files": files, "start_seconds": times,
            "start_median": statistics.median(times)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image", nargs="?", default=None, help="default: $VA_IMAGE or "
                    "localhost/vllm-autoscaler:<CMakeLists VERSION>")
    ap.add_argument("--starts", type=int, default=5)
    a = ap.parse_args()
    try:
        print(json.dumps(measure(a.image or default_image(), a.starts), indent=1))
    except LookupError as e:
        print(f"image_root: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
