"""`edgekd gate`: the CI regression gate. A candidate build against a baseline build: the profile's
budgets on the candidate, and regressions in latency, the task's metric (an accuracy drop, a
perplexity increase) and size, latency judged on a bootstrap confidence interval over the raw bench
samples (docs/ci.md)."""
from edgekd.gate.outputs import write_outputs
from edgekd.gate.reports import GateInputError, load_report
from edgekd.gate.run import GateResult
from edgekd.gate.run import gate as run_gate

__all__ = ["GateInputError", "GateResult", "load_report", "run_gate", "write_outputs"]
