"""schemathesis against the live server, as its CLI runs by default: every phase (examples,
coverage, fuzzing, stateful), every check, every operation in /openapi.json. No 5xx, every
response conforms to the document, and every request the document calls invalid is
rejected with a 4xx.

The coverage phase matters most: it sends, field by field, each value of a wrong type that
the request schemas rule out (an object where ``inputs[0].datatype`` should be a string...),
which random fuzzing rarely hits; an unchecked field reaching the codec was a 500 (issue 15).

schemathesis's pytest plugin does not run on pytest 9 yet, so the test drives its engine
(what ``schemathesis run`` runs) and reads its events.

One check is left out: "schema-valid data is accepted". Whether a V2 request is valid
depends on the model's signature (which features, which types), which the document gives
per model in /v2/models/{name} rather than in the request schema; a schema-valid tensor for
a feature the model does not have is rightly a 400."""

import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events, from_schema

from modelmon.stack.processes import stop_process
from tests.conftest import start_server

pytestmark = pytest.mark.slow
TOKEN = "fuzz-token"
#: Cases per operation and phase where a phase generates them (fuzzing, stateful steps);
#: bounds the run to about a minute. Coverage and examples are not random: all of theirs run.
MAX_EXAMPLES = 25
#: Unloading models would turn every later request into a 404: that operation runs last, alone.
UNLOAD = "/v2/repository/models/{name}/unload"


@pytest.fixture(scope="module")
def fuzzed_server(registry_dir, tmp_path_factory):
    token = tmp_path_factory.mktemp("fuzz") / "token"
    token.write_text(TOKEN)
    server = start_server(registry_dir, tmp_path_factory.mktemp("fuzz-logs"), "--api-token-file", str(token),
                          "--drain-seconds", "0", "--max-body-bytes", "65536")
    yield server
    stop_process(server.process)


@dataclass
class Failure:
    phase: str
    operation: str
    check: str
    detail: str


@dataclass
class Run:
    """What one engine run did: its phases, the responses and the failed checks."""

    phases: dict[str, Status] = field(default_factory=dict)
    statuses: Counter = field(default_factory=Counter)
    cases: Counter = field(default_factory=Counter)  # per operation
    failures: list[Failure] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def run_schemathesis(url: str, only_unload: bool) -> Run:
    config = SchemathesisConfig.from_dict({
        "headers": {"Authorization": f"Bearer {TOKEN}"},
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
        "phases": {"stateful": {"max-steps": 6}},
        "checks": {"positive_data_acceptance": {"enabled": False}},
        "continue-on-failure": True,
        "cache": {"enabled": False},  # no .schemathesis/ in the work tree, no replays of old runs
        # One worker: schemathesis's threads trip CPython 3.11's "AST constructor recursion
        # depth mismatch" SystemError, and one is fast enough.
        "workers": 1,
    })
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config)
    schema = schema.include(path=UNLOAD) if only_unload else schema.exclude(path=UNLOAD)
    run = Run()
    for event in from_schema(schema).execute():
        if isinstance(event, events.PhaseStarted):
            started = time.monotonic()
        elif isinstance(event, events.PhaseFinished):
            run.phases[event.phase.name.value] = event.status
            run.seconds[event.phase.name.value] = round(time.monotonic() - started, 1)
        elif isinstance(event, events.ScenarioFinished):
            for case_id, interaction in event.recorder.interactions.items():
                if interaction.response is not None:
                    run.statuses[interaction.response.status_code] += 1
                    run.cases[event.recorder.cases[case_id].value.operation.label] += 1
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        case = event.recorder.cases[case_id].value
                        failure = check.failure_info.failure
                        run.failures.append(Failure(
                            event.phase.value, case.operation.label, check.name,
                            f"{failure.title}: {failure.message}\n    {check.failure_info.code_sample:.1000}",
                        ))
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            run.errors.append(str(getattr(event, "info", event)))
    return run


def report(failures: list[Failure]) -> str:
    """Failed checks counted by operation and check, then examples, server errors first."""
    counts = Counter(f"{f.operation} {f.check}" for f in failures)
    examples = sorted(failures, key=lambda f: f.check != "not_a_server_error")[:10]
    return "\n".join([f"{len(failures)} failed checks:", *(f"  {n} x {key}" for key, n in counts.most_common()),
                      *(f"[{f.phase}] {f.operation} {f.check}: {f.detail}" for f in examples)])


def test_every_operation_conforms_in_every_phase(fuzzed_server):
    run = run_schemathesis(fuzzed_server.url, only_unload=False)
    assert not run.errors, "\n".join(run.errors)
    assert not run.failures, report(run.failures)
    # The phases ran, not only fuzzing (examples and stateful run as far as the document
    # gives them something to do: examples in its schemas, links between operations).
    assert run.phases.get("coverage") == Status.SUCCESS, run.phases
    assert run.phases.get("fuzzing") == Status.SUCCESS, run.phases
    assert set(run.phases) >= {"examples", "coverage", "fuzzing", "stateful"}, run.phases
    assert len(run.cases) >= 16, sorted(run.cases)
    # The body-taking operations got many cases each, and both accepted and rejected ones.
    infer = run.cases["POST /v2/models/{name}/infer"]
    assert infer > 100, run.cases
    assert run.statuses[200] > 50 and sum(n for code, n in run.statuses.items() if 400 <= code < 500) > 300, run.statuses
    assert not [code for code in run.statuses if code >= 500], run.statuses
    print(sum(run.cases.values()), "cases", dict(run.statuses), run.seconds)


def test_unloading_conforms(fuzzed_server):
    """Last: it stops serving the models the other test needs."""
    run = run_schemathesis(fuzzed_server.url, only_unload=True)
    assert not run.errors, "\n".join(run.errors)
    assert not run.failures, report(run.failures)
    assert sum(run.cases.values()) > 20 and not [code for code in run.statuses if code >= 500], run.statuses
