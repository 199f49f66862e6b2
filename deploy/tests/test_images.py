"""The container images: scripts/images.sh builds them with buildah (here from the debug binaries
the Rust tests built), then each image's root filesystem is unpacked from its OCI archive and
every binary in it is run from there (chroot: only what the image holds is available — podman
cannot run containers on this machine). Root is required (buildah, chroot).

Run: python3 -m unittest discover -s deploy/tests -p 'test_images.py' -v
"""

import json
import os
import pathlib
import subprocess
import tarfile
import tempfile
import unittest

ROOT = pathlib.Path(__file__).resolve().parents[2]

IMAGES = {
    "verdict-agent": {"user": "0:0", "entrypoint": ["/usr/bin/verdict-probe"], "binaries": ["verdict-probe", "verdict-shipper"]},
    "verdict-collector": {"user": "65532:65532", "entrypoint": ["/usr/bin/verdict-collector"], "binaries": ["verdict-collector"]},
}


def blob(layout, digest):
    algo, hexdigest = digest.split(":")
    return layout / "blobs" / algo / hexdigest


def unpack(archive, into):
    """(image config, root filesystem path) of an OCI archive with one image."""
    layout = into / "layout"
    with tarfile.open(archive) as t:
        t.extractall(layout, filter="tar")
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob(layout, index["manifests"][0]["digest"]).read_text())
    config = json.loads(blob(layout, manifest["config"]["digest"]).read_text())
    rootfs = into / "rootfs"
    rootfs.mkdir()
    for layer in manifest["layers"]:
        with tarfile.open(blob(layout, layer["digest"])) as t:
            t.extractall(rootfs, filter="tar")
    return config, rootfs


class Images(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise AssertionError("the image tests need root (buildah, chroot): run them as root, as scripts/test.sh does")
        cls.tmp = tempfile.TemporaryDirectory()
        cls.out = pathlib.Path(cls.tmp.name)
        r = subprocess.run(["bash", "scripts/images.sh", "--debug", "--out", cls.out / "images"], cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0:
            raise AssertionError(f"scripts/images.sh failed:\n{r.stdout}\n{r.stderr}")
        cls.report = r.stdout

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_each_image_runs_its_binaries_from_its_own_root_filesystem(self):
        for name, want in IMAGES.items():
            with self.subTest(image=name):
                archive = self.out / "images" / f"{name}.oci.tar"
                self.assertIn(name, self.report)
                config, rootfs = unpack(archive, pathlib.Path(tempfile.mkdtemp(dir=self.out)))
                self.assertEqual(config["config"]["Entrypoint"], want["entrypoint"])
                self.assertEqual(config["config"]["User"], want["user"])
                labels = config["config"]["Labels"]
                self.assertIn("libc6=", labels["dev.verdict.debian-packages"])
                # Nothing but what runs: no shell, no package manager.
                for absent in ["bin/sh", "usr/bin/sh", "bin/bash", "usr/bin/apt", "usr/bin/dpkg"]:
                    self.assertFalse((rootfs / absent).exists(), f"{name} holds /{absent}")
                for b in want["binaries"]:
                    r = subprocess.run(["chroot", "--userspec", want["user"], rootfs, f"/usr/bin/{b}", "--help"], capture_output=True, text=True)
                    self.assertEqual(r.returncode, 0, f"{name}: {b} --help: {r.stderr}")
                    self.assertIn("Usage", r.stdout, f"{name}: {b}")
                self.assertTrue((rootfs / "etc/ssl/certs/ca-certificates.crt").stat().st_size > 10_000)


if __name__ == "__main__":
    unittest.main()
