"""Ingest cost: a full ingest of a generated archive, and what 50 000 chunks would take.

Builds a folder of documents from the source text (the paragraphs of the knowledge folder's
documents, shuffled into new documents with titles of their own, until the splitter makes at
least --chunks chunks), runs the real `styringsbot ingest` on it in a fresh data folder, and
prints chunks/s, CPU-seconds per chunk and the ingest process's peak RSS. Run it twice on a
shared machine and compare within one run.

    python benchmarks/ingest_speed.py [--chunks 400] [--runs 2] [--sentence-vectors fork]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest.loaders import load  # noqa: E402
from ingest.model import Page, Source  # noqa: E402
from ingest.split import sentence_units, split_pages  # noqa: E402

TOPICS = ("Styringsdialog", "Tildelingsbrev", "Etatsstyring", "Fagmøter", "Tillit", "Lederskap")


def paragraphs(knowledge: Path) -> list[str]:
    found = []
    for path in sorted(knowledge.glob("*.txt")):
        for page in load(path).pages:
            found += [p.strip() for p in page.text.split("\n\n") if len(p.strip()) > 80]
    return found


def archive(folder: Path, knowledge: Path, chunks: int, seed: int = 7) -> tuple[int, int]:
    """Writes documents of 6–14 paragraphs until they make `chunks` chunks; returns the chunks
    and sentences the splitter makes of them."""
    rng = random.Random(seed)
    pool = paragraphs(knowledge)
    made = sentences = 0
    n = 0
    while made < chunks:
        n += 1
        title = f"{rng.choice(TOPICS)} i praksis, notat {n}"
        text = "\n\n".join(rng.sample(pool, rng.randint(6, 14)))
        (folder / f"notat-{n:04d}.md").write_text(f"# {title}\n\n{text}\n", encoding="utf-8")
        split = split_pages(Source(f"notat-{n:04d}.md", title), [Page(text)], [text])
        made += len(split)
        sentences += sum(len(sentence_units(c)) for c in split)
    return made, sentences


def ingest(home: Path, method: str) -> tuple[float, float, float, str]:
    """Wall seconds, CPU seconds and peak RSS (MB) of one `styringsbot ingest` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "ingest", "--quiet"],
        cwd=home,
        env={**os.environ, "STYRINGSBOT_HOME": str(home), "STYRINGSBOT_SENTENCE_VECTORS": method},
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, after.ru_maxrss / 1024, done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=400, help="chunks to generate (≥ 300)")
    parser.add_argument("--runs", type=int, default=2, help="full ingests, each from empty")
    parser.add_argument(
        "--sentence-vectors",
        choices=("apart", "fork"),
        default="apart",
        help="how sentence vectors are made (STYRINGSBOT_SENTENCE_VECTORS)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        knowledge = Path(tmp) / "knowledge"
        knowledge.mkdir()
        chunks, sentences = archive(knowledge, ROOT / "knowledge", args.chunks)
        print(f"Arkiv: {chunks} tekstbiter, {sentences} setninger", file=sys.stderr)
        for run in range(1, args.runs + 1):
            home = Path(tmp) / f"run{run}"
            home.mkdir()
            shutil.copytree(knowledge, home / "knowledge")
            wall, cpu, rss, summary = ingest(home, args.sentence_vectors)
            state = json.loads((home / "data" / "index.json").read_text(encoding="utf-8"))
            indexed = sum(len(f["chunk_ids"]) for f in state["files"].values())
            figures = {
                "run": run,
                "sentence_vectors": args.sentence_vectors,
                "chunks": indexed,
                "sentences": sentences,
                "wall_s": round(wall, 1),
                "cpu_s": round(cpu, 1),
                "chunks_per_s": round(indexed / wall, 2),
                "cpu_s_per_chunk": round(cpu / indexed, 3),
                "peak_rss_mb": round(rss),
                "projected_50k_hours": round(50_000 / (indexed / wall) / 3600, 2),
            }
            results.append(figures)
            if not args.json:
                print(
                    f"run {run}: {indexed} tekstbiter på {wall:.1f} s = {indexed / wall:.1f} "
                    f"tekstbiter/s; {cpu / indexed:.3f} CPU-s per tekstbit; topp-RSS {rss:.0f} MB; "
                    f"50 000 tekstbiter ≈ {figures['projected_50k_hours']} t\n  {summary}"
                )
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
