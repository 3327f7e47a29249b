#!/usr/bin/env python3
"""Writes the benchmark build contexts w1..w5 of issue 7, and multi (issue 17), into OUTDIR.

Deterministic: every byte comes from random.Random seeded per file, and every file and directory
gets the same mtime (SOURCE_DATE_EPOCH, default 2024-01-01), so two runs on two machines give
identical trees and the builders see the same inputs.

KILN_BENCH_SCALE (default 1.0) multiplies the sizes and file counts (not the small w1), so
`KILN_BENCH_SCALE=0.01` gives a smoke run in seconds. The scale is recorded in OUTDIR/.scale;
a workload already generated with the same scale and generator is left alone (generation of
the full set writes ~1.7 GB and takes minutes).
"""
import hashlib
import os
import random
import sys

MiB = 1 << 20
EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "1704067200"))
SCALE = float(os.environ.get("KILN_BENCH_SCALE", "1.0"))
WORDS = ("kiln layer image build stage copy run cache digest store registry push pull "
         "manifest config overlay snapshot tar gzip zstd sha256 context ignore file "
         "directory mode owner the a of to and in is for with on").split()


def scaled(n, minimum=1):
    return max(minimum, int(round(n * SCALE)))


def rng_for(name):
    # One generator per file, seeded by its path: files do not depend on generation order.
    return random.Random(int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big"))


_POOL = None


def text_bytes(rng, size):
    """Compressible text (roughly 4:1 with gzip): seeded choices from one fixed pool of lines."""
    global _POOL
    if _POOL is None:
        pool_rng = random.Random(7)
        _POOL = [" ".join(pool_rng.choices(WORDS, k=pool_rng.randint(4, 14))) + "\n"
                 for _ in range(4096)]
    out, n = [], 0
    while n < size:
        chunk = "".join(rng.choices(_POOL, k=min(4096, size // 40 + 1))).encode()
        out.append(chunk)
        n += len(chunk)
    return b"".join(out)[:size]


class Writer:
    def __init__(self, root):
        self.root = root

    def file(self, rel, data, mode=0o644):
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)

    def random_file(self, rel, size):
        """Incompressible bytes, written in 4 MiB pieces so memory stays flat."""
        rng = rng_for(rel)
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            left = size
            while left > 0:
                n = min(left, 4 * MiB)
                f.write(rng.randbytes(n))
                left -= n

    def text_file(self, rel, size):
        rng = rng_for(rel)
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            left = size
            while left > 0:
                n = min(left, 4 * MiB)
                f.write(text_bytes(rng, n))
                left -= n

    def finish(self):
        """Fixed mtimes on everything, children before parents."""
        for dirpath, dirnames, filenames in os.walk(self.root, topdown=False):
            for name in filenames + dirnames:
                os.utime(os.path.join(dirpath, name), (EPOCH, EPOCH), follow_symlinks=False)
        os.utime(self.root, (EPOCH, EPOCH))


# The file benches/compare.sh rewrites for the one-file-edit rebuild (and restores afterwards).
EDIT_FILES = {"w1": "src/edit.txt", "w2": "data/edit.txt", "w3": "tree/d00/e0/edit.txt",
              "w4": "edit.txt", "w5": "app/edit.txt", "multi": "src/edit.txt"}
EDIT = b"edit 0\n"
HEADER = "# syntax=docker/dockerfile:1\nARG BASE=127.0.0.1:5000/kiln-test\nFROM ${BASE}/busybox:latest\n"


def w1_files(w):
    """w1's ~200 small files in src/, static/, conf/."""
    for i in range(120):
        rng = rng_for(f"w1/src/{i}")
        w.file(f"src/mod{i // 20:02d}/unit{i:03d}.sh", text_bytes(rng, rng.randint(300, 6000)))
    for i in range(60):
        rng = rng_for(f"w1/static/{i}")
        ext = ("css", "js", "html", "svg")[i % 4]
        w.file(f"static/asset{i:03d}.{ext}", text_bytes(rng, rng.randint(500, 20000)))
    for i in range(20):
        rng = rng_for(f"w1/conf/{i}")
        w.file(f"conf/app{i:02d}.conf", text_bytes(rng, rng.randint(100, 2000)))
    w.file("src/edit.txt", EDIT)


W1_STEPS = ("WORKDIR /app\n"
            "COPY conf/ /etc/app/\n"
            "COPY src/ static/ ./\n"
            "RUN find /app -type f | wc -l > /app/file-count\n"
            "EXPOSE 8080\n"
            'CMD ["httpd", "-f", "-p", "8080", "-h", "/app"]\n')


def w1(w):
    """Small app: ~200 small files in src/, static/, conf/."""
    w1_files(w)
    w.file("Dockerfile", (HEADER + W1_STEPS).encode())


def multi(w):
    """w1 for linux/amd64 and linux/arm64 (issue 17): the multi-arch busybox base; the RUN of
    arm64 goes through qemu (binfmt_misc). compare.sh builds it with --platform for both."""
    w1_files(w)
    w.file("Dockerfile", (HEADER.replace("/busybox:", "/busybox-multiarch:") + W1_STEPS).encode())


def w2(w):
    """Big context: 10 x 64 MiB random + 10 x ~38 MiB compressible text."""
    for i in range(10):
        w.random_file(f"data/random{i:02d}.bin", scaled(64 * MiB))
        w.text_file(f"data/text{i:02d}.txt", scaled(38 * MiB + i * 97 * 1024))
    w.file("data/edit.txt", EDIT)
    w.file("Dockerfile", (HEADER + "COPY data/ /data/\n"
                          "RUN du -s /data > /data.size\n").encode())


def w3(w):
    """Many files: 50,000 files (~200 MB) in 50 x 10 nested directories."""
    count = scaled(50000, 10)
    for i in range(count):
        d = i % 500
        rel = f"tree/d{d // 10:02d}/e{d % 10}/f{i:05d}"
        rng = rng_for(rel)
        size = rng.randint(0, 8000)
        data = rng.randbytes(size) if i % 2 else text_bytes(rng, size)
        w.file(rel, data)
    w.file("tree/d00/e0/edit.txt", EDIT)
    w.file("Dockerfile", (HEADER + "COPY tree/ /tree/\n"
                          "RUN find /tree -type f | wc -l > /tree.count\n").encode())


def w4(w):
    """Multi-stage: stage 1 RUN makes 2,000 small files + 64 MiB; stage 2 copies them."""
    files, mib = scaled(2000, 10), scaled(64)
    w.file("edit.txt", EDIT)
    w.file("gen.sh", ("#!/bin/sh\nset -e\nmkdir -p /out/small\ni=0\n"
                      'while [ $i -lt "$1" ]; do\n'
                      '  echo "file $i of the generated tree" > /out/small/f$i.txt\n'
                      "  i=$((i+1))\ndone\n"
                      'dd if=/dev/urandom of=/out/blob.bin bs=1048576 count="$2" 2>/dev/null\n'
                      ).encode(), 0o755)
    w.file("Dockerfile", ("# syntax=docker/dockerfile:1\nARG BASE=127.0.0.1:5000/kiln-test\n"
                          f"FROM ${{BASE}}/busybox:latest AS gen\n"
                          "COPY gen.sh /gen.sh\n"
                          f"RUN /gen.sh {files} {mib}\n"
                          "FROM ${BASE}/busybox:latest\n"
                          "COPY --from=gen /out/ /srv/\n"
                          "COPY edit.txt /srv/edit.txt\n"
                          'CMD ["ls", "/srv"]\n').encode())


def w5(w):
    """.dockerignore: ~300 MiB of the context ignored, a small app copied with COPY . ."""
    for i in range(100):
        rng = rng_for(f"w5/app/{i}")
        w.file(f"app/lib{i // 25}/part{i:03d}.sh", text_bytes(rng, rng.randint(200, 8000)))
    w.file("app/main.sh", b"#!/bin/sh\necho main\n", 0o755)
    w.file("app/edit.txt", EDIT)
    for i in range(4):
        w.random_file(f"node_modules/.cache/pack{i}.bin", scaled(50 * MiB))
    for i in range(20):
        w.text_file(f"build/out{i:02d}.log", scaled(5 * MiB))
    w.random_file(".git/objects/pack/pack-0.pack", scaled(50 * MiB))
    w.file(".dockerignore", b"node_modules\nbuild/\n.git\n**/*.log\n!app/keep.log\n")
    w.file("app/keep.log", b"kept despite **/*.log\n")
    w.file("Dockerfile", (HEADER + "WORKDIR /srv\n"
                          "COPY . .\n"
                          'CMD ["/srv/app/main.sh"]\n').encode())


WORKLOADS = {"w1": w1, "w2": w2, "w3": w3, "w4": w4, "w5": w5, "multi": multi}


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: generate.py OUTDIR [w1 w2 ...]")
    out = sys.argv[1]
    names = sys.argv[2:] or list(WORKLOADS)
    stamp = f"scale={SCALE} epoch={EPOCH} gen={hashlib.sha256(open(__file__, 'rb').read()).hexdigest()}\n"
    for name in names:
        if name not in WORKLOADS:
            sys.exit(f"generate.py: unknown workload {name} (known: {' '.join(WORKLOADS)})")
        root = os.path.join(out, name)
        marker = os.path.join(out, f".{name}.done")
        if os.path.exists(marker) and open(marker).read() == stamp:
            continue
        # Never leave a half-written context that looks complete: build aside, then rename.
        tmp = root + ".tmp"
        for path in (tmp, root):
            if os.path.exists(path):
                import shutil
                shutil.rmtree(path)
        os.makedirs(tmp)
        w = Writer(tmp)
        WORKLOADS[name](w)
        w.finish()
        os.rename(tmp, root)
        with open(marker, "w") as f:
            f.write(stamp)
        print(f"generated {root}", file=sys.stderr)


if __name__ == "__main__":
    main()
