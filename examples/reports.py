"""A report built in a temporary file: the way many libraries work (spreadsheets, archives,
downloads). Worker pods have a read-only root filesystem and a writable /tmp (TMPDIR), so
`tempfile` works there as it does on a laptop.

ergon run examples.reports:ReportFlow --input '{"rows": 3}'
"""

from __future__ import annotations

import hashlib
import os
import tempfile

import ergon


class ReportFlow(ergon.Flow):
    rows: int = 3

    @ergon.flow
    async def run(self) -> str:
        digest = await self.build()
        return f"report of {self.rows} rows, sha256 {digest[:12]}"

    @ergon.step
    def build(self) -> str:
        with tempfile.NamedTemporaryFile("w+", suffix=".csv") as report:
            report.write("id,amount\n")
            for row in range(self.rows):
                report.write(f"{row},{row * 10}\n")
            report.flush()
            report.seek(0)
            body = report.read()
            print(f"wrote {len(body)} bytes to {os.path.dirname(report.name)}", flush=True)
        return hashlib.sha256(body.encode()).hexdigest()
