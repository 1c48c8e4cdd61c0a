"""`python -m tests.processes.run_flow STORE_URL FLOW_ID FLOW_PATH INPUT_JSON`: execute one
flow with an Executor and print its outcome (used by the process tests)."""

from __future__ import annotations

import asyncio
import json
import sys

import ergon
from ergon.cli.running import describe


async def main(url: str, flow_id: str, path: str, input_json: str) -> None:
    store = ergon.open_store(url)
    try:
        flow = ergon.load_flow(path).model_validate_json(input_json)
        outcome = await ergon.Executor(flow_id, flow, store).execute()
    finally:
        await store.close()
    print(json.dumps(describe(outcome)), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
