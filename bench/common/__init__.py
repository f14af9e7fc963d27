"""What every benchmark shares.

- ``paths``: where the repository, its models and the benchmarks' output are;
- ``measure``: a cell's warm-up and measured window, its latency figures;
- ``report``: progress lines, verdicts, JSON without NaN, the machine's load around a run;
- ``net``: free ports and readiness polls on this host;
- ``standalone``: the wheel's ``tritonserver``, the baseline every comparison is made to;
- ``serve_app``: Ray and one Serve application in this process.

The KServe v2 request and response encoding is the project's own
(``app.protocol.kserve_v2.client``), so the benchmarks send what the server decodes.
"""
