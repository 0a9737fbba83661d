"""What counting `usage` tokens costs: the compact counter (chatgpt_web/bpe.py) against tiktoken.

    python bench/token_count.py [--rounds 5] [--encoding o200k_base]

1. CPU per text, by kind of text: short chat answers, long prompts, code, CJK, emoji, whitespace
   runs (all built deterministically from this repository's files and fixed sentences). Each
   round counts every text of a kind with one implementation, then with the other (alternating
   which goes first); medians of the rounds. "cold" rounds empty the counter's remembered piece
   counts first (a worker's first answers); "warm" ones keep them (a worker that has counted).
   `ratio` = compact / tiktoken (below 1: the compact counter is faster).
2. Memory and load time per process: a fresh interpreter loads one encoding and counts one text
   (the first count of a lazy worker); CPU seconds of the load, RSS it grew by once the collector
   and malloc_trim ran, and its peak growth. Then the same loaded in a parent that forks a child
   (USAGE_TOKENIZER=preload): the child's RSS and PSS growth after counting the corpus (smaps).
   `compact` builds its table in memory (no writable CACHE_DIR), `mapped` maps the table file a
   first process wrote (what every worker does once it exists).
"""
from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chatgpt_web import usage  # noqa: E402

CJK_SENTENCES = [
    "日本語のテキストを数えます。", "これは長い文章で、句読点もあります。",
    "東京は日本の首都です。", "中文文本也一样，我们需要准确地计算令牌的数量。",
    "今天天气很好，我们去公园散步吧！", "机器学习模型需要大量的数据。",
    "한국어 문장도 포함되어 있습니다.", "서울은 대한민국의 수도입니다.",
    "「引用」（括弧）…全角ＡＢＣ１２３", "这个问题的答案是：不一定。", "よろしくお願いします。",
]
EMOJI_SENTENCES = [
    "Great job! 🎉🎉", "👍🏽 Let's go 🚀", "I love this ❤️❤️", "Thinking... 🤔", "Done ✅ ✨✨✨",
    "Family: 👨‍👩‍👧‍👦", "Flags 🇫🇷🇩🇪🇯🇵", "lol 😂😂😂 that's funny", "Weather ☀️🌧️⛈️",
]


def corpus() -> dict[str, list[str]]:
    """Kinds of text -> distinct texts of that kind (deterministic)."""
    chooser = random.Random(19)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    sources = sorted((REPO / "chatgpt_web").rglob("*.py"))
    code = [text for text in (path.read_text(encoding="utf-8") for path in sources)
            if len(text) > 4000][:12]
    return {
        "answer": [readme[i:i + 1200] for i in range(0, 120_000, 1200)][:100],
        "prompt": [readme[i:i + 20_000] for i in range(0, 100_000, 20_000)],
        "code": code,
        "cjk": ["".join(chooser.choice(CJK_SENTENCES) for _ in range(30)) for _ in range(40)],
        "emoji": [" ".join(chooser.choice(EMOJI_SENTENCES) for _ in range(60)) for _ in range(40)],
        "whitespace": ["".join(chooser.choice(["    ", "\n", "\n\n", "\t", " " * 17, "x", "  y ",
                                               "\r\n", "\n" * 5 + " " * 9, "z = 1"])
                               for _ in range(300)) for _ in range(40)],
    }


def reference(name: str):
    """tiktoken's CoreBPE for `name`, as usage.py loaded it before the compact counter."""
    from tiktoken._tiktoken import CoreBPE
    text = gzip.decompress((usage.VOCABULARY_DIRECTORY / f"{name}.tiktoken.gz").read_bytes())
    ranks = {base64.b64decode(token): int(rank)
             for token, rank in (line.split() for line in text.splitlines())}
    return CoreBPE(ranks, {}, usage._ENCODINGS[name][1])


def cpu_per_text(function, texts) -> float:
    began = time.process_time()
    for text in texts:
        function(text)
    return (time.process_time() - began) / len(texts)


def compare_cpu(name: str, rounds: int) -> None:
    compact = usage._encoding(name)
    tiktoken = reference(name)
    print(f"CPU per text, {name}, median of {rounds} rounds (load {os.getloadavg()[0]:.1f}):")
    print(f"  {'kind':<11}{'texts':>6}{'tokens':>8}   {'cold':>9}{'warm':>9}{'tiktoken':>10}"
          f"   {'cold/tt':>8}{'warm/tt':>8}")
    for kind, texts in corpus().items():
        for text in texts:
            assert compact.count(text) == len(tiktoken.encode_ordinary(text)), kind
        cold, warm, reference_cpu = [], [], []
        for round_ in range(rounds):
            if round_ % 2:
                reference_cpu.append(cpu_per_text(tiktoken.encode_ordinary, texts))
            compact._counts.clear()
            cold.append(cpu_per_text(compact.count, texts))
            warm.append(cpu_per_text(compact.count, texts))
            if not round_ % 2:
                reference_cpu.append(cpu_per_text(tiktoken.encode_ordinary, texts))
        tokens = statistics.mean(compact.count(text) for text in texts)
        medians = [statistics.median(values) for values in (cold, warm, reference_cpu)]
        print(f"  {kind:<11}{len(texts):>6}{tokens:>8.0f}   "
              + "".join(f"{value * 1e6:>7.0f}us" for value in medians[:2])
              + f"{medians[2] * 1e6:>8.0f}us   {medians[0] / medians[2]:>8.2f}"
              f"{medians[1] / medians[2]:>8.2f}")


# Run in a fresh interpreter: argv = implementation ("compact", "tiktoken" or "none", the
# baseline), encoding, "lazy" | "preload", repository, the table directory ("mapped").
_PROCESS = r"""
import ctypes, gc, json, os, sys, time
sys.path.insert(0, sys.argv[4])
implementation, name, mode = sys.argv[1:4]
from chatgpt_web import usage
sys.path.insert(0, os.path.join(sys.argv[4], "bench"))
import token_count
trim = ctypes.CDLL("libc.so.6").malloc_trim

def settle():
    gc.collect()
    trim(0)

def peak():
    # VmHWM, not ru_maxrss: the latter carries over the peak of the process that started this one.
    with open("/proc/self/status") as file:
        return next(int(line.split()[1]) for line in file if line.startswith("VmHWM:")) / 1024

def smaps():
    fields = {}
    with open("/proc/self/smaps_rollup") as file:
        for line in file:
            parts = line.split()
            if parts[0] in ("Rss:", "Pss:"):
                fields[parts[0][:-1]] = int(parts[1]) / 1024
    return fields

def load():
    if implementation == "mapped":
        usage.store_tables_in(sys.argv[5])
    if implementation in ("compact", "mapped"):
        return usage._encoding(name).count
    if implementation == "tiktoken":
        counter = token_count.reference(name)
        return lambda text: len(counter.encode_ordinary(text))
    return usage.estimate_tokens

settle()
began = time.process_time()
count = load()
count("Hello there, how are you?")
load_cpu = time.process_time() - began
if mode == "lazy":
    settle()
    print(json.dumps({"load_cpu": load_cpu, "rss": smaps()["Rss"],
                      "peak": peak()}))
    sys.exit()
reader, writer = os.pipe()
child = os.fork()
if child == 0:
    for kind in token_count.corpus().values():
        for text in kind:
            count(text)
    settle()
    os.write(writer, json.dumps(smaps()).encode())
    os._exit(0)
os.waitpid(child, 0)
print(os.read(reader, 4096).decode())
"""


def process_memory(implementation: str, name: str, mode: str, tables: str) -> dict:
    result = subprocess.run([sys.executable, "-c", _PROCESS, implementation, name, mode, str(REPO),
                             tables], capture_output=True, text=True, timeout=300, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def compare_memory(name: str) -> None:
    print(f"Per process, {name}, above a process that loads none (load {os.getloadavg()[0]:.1f}):")
    print(f"  {'':<10}{'load CPU':>10}{'RSS':>9}{'peak':>9}   {'forked child RSS':>17}{'PSS':>8}")
    tables = tempfile.mkdtemp(prefix="token-tables-")
    subprocess.run([sys.executable, "-c", "import sys; from chatgpt_web import usage; "
                    "usage.store_tables_in(sys.argv[1]); usage._load(sys.argv[2])", tables, name],
                   cwd=REPO, check=True, timeout=300)
    try:
        lazy_base = process_memory("none", name, "lazy", tables)
        forked_base = process_memory("none", name, "preload", tables)
        for implementation in ("compact", "mapped", "tiktoken"):
            lazy = process_memory(implementation, name, "lazy", tables)
            forked = process_memory(implementation, name, "preload", tables)
            print(f"  {implementation:<10}{lazy['load_cpu'] * 1000:>8.1f}ms"
                  f"{lazy['rss'] - lazy_base['rss']:>7.1f}MB"
                  f"{lazy['peak'] - lazy_base['peak']:>7.1f}MB"
                  f"   {forked['Rss'] - forked_base['Rss']:>15.1f}MB"
                  f"{forked['Pss'] - forked_base['Pss']:>6.1f}MB")
    finally:
        shutil.rmtree(tables, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--encoding", default="o200k_base", choices=sorted(usage._ENCODINGS))
    args = parser.parse_args()
    compare_cpu(args.encoding, args.rounds)
    compare_memory(args.encoding)


if __name__ == "__main__":
    main()
