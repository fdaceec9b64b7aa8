"""Grafana's query expansion, as the tests and the report do it, against the outputs Grafana
and the SQLite plugin document."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from modelmon.dashboards.templating import (
    Expansion,
    Selection,
    TemplateError,
    TimeRange,
    duration,
    expand_promql,
    expand_sql,
    parse_duration,
)

RANGE = TimeRange(datetime(2017, 4, 21, 5, 1, 17, tzinfo=UTC), datetime(2017, 4, 21, 5, 6, 17, tzinfo=UTC))


def context(**variables: Selection) -> Expansion:
    return Expansion(RANGE, dict(variables), min_interval=15.0)


def test_postgresql_macros_as_grafana_expands_them():
    ctx = context()
    assert expand_sql("WHERE $__timeFilter(time_column)", ctx, "postgresql") == (
        "WHERE time_column BETWEEN '2017-04-21T05:01:17Z' AND '2017-04-21T05:06:17Z'"
    )
    assert expand_sql("SELECT $__timeGroupAlias(dateColumn,'5m')", ctx, "postgresql") == (
        'SELECT floor(extract(epoch from dateColumn)/300)*300 AS "time"'
    )
    assert expand_sql("GROUP BY $__timeGroup(t, 1h)", ctx, "postgresql") == "GROUP BY floor(extract(epoch from t)/3600)*3600"
    assert expand_sql("$__timeFrom() $__timeTo()", ctx, "postgresql") == "'2017-04-21T05:01:17Z' '2017-04-21T05:06:17Z'"
    assert expand_sql("$__unixEpochFilter(ts)", ctx, "postgresql") == "ts >= 1492750877 AND ts <= 1492751177"
    # $__interval is a variable, replaced before the macro runs: 300 s / 1000 points -> 15 s minimum.
    assert expand_sql("$__timeGroupAlias(t, $__interval)", ctx, "postgresql") == 'floor(extract(epoch from t)/15)*15 AS "time"'


def test_sqlite_macros_as_the_frser_plugin_expands_them():
    ctx = context()
    assert expand_sql("WHERE $__timeFilter(ts)", ctx, "sqlite") == (
        "WHERE CAST(CASE WHEN typeof(ts) = 'integer' THEN ts ELSE strftime(\"%s\", ts) END AS INTEGER) BETWEEN 1492750877 AND 1492751177"
    )
    assert expand_sql("SELECT $__unixEpochGroupSeconds(time, 500) AS window", ctx, "sqlite") == "SELECT cast((time / 500) as int) * 500 AS window"
    assert expand_sql("$__unixEpochGroupSeconds(t, $__interval_ms)", ctx, "sqlite") == "cast((t / 15000) as int) * 15000"
    with pytest.raises(TemplateError, match="SQLite"):
        expand_sql("$__timeGroupAlias(t, 1m)", ctx, "sqlite")


def test_the_expanded_sqlite_time_filter_runs_on_sqlite():
    import sqlite3

    ctx = context()
    sql = expand_sql("SELECT count(*) FROM t WHERE $__timeFilter(at)", ctx, "sqlite")
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (at)")  # no affinity: texts stay texts, numbers numbers
    db.executemany("INSERT INTO t VALUES (?)", [("2017-04-21 05:02:00.5",), ("2017-04-21 06:00:00",), (1492750900,)])
    assert db.execute(sql).fetchone()[0] == 2


def test_variables_are_formatted_per_datasource():
    ctx = context(
        model=Selection.single("churn"),
        version=Selection(("1", "2"), multi=True),
        every=Selection(("a", "b"), all=True, all_value=".*", multi=True),
        run=Selection(("3", "4"), all=True, multi=True),
        dotted=Selection(("v1.0",), multi=True),
    )
    assert expand_promql('x{model="$model", version=~"$version", f=~"$every", d=~"$dotted"}', ctx) == (
        # Two backslashes: the PromQL string takes one away, leaving the regex v1\.0.
        'x{model="churn", version=~"(1|2)", f=~".*", d=~"v1\\\\.0"}'
    )
    assert expand_sql("WHERE model = '$model' AND run_id IN (${run:singlequote}) AND v IN ($version)", ctx, "postgresql") == (
        "WHERE model = 'churn' AND run_id IN ('3','4') AND v IN ('1','2')"
    )
    assert expand_promql("${version:csv} ${version:pipe}", ctx) == "1,2 1|2"
    # Grafana writes a custom "All" value as it is, in SQL and whatever the format (templateSrv).
    assert expand_sql("'${every:csv}' $every", ctx, "postgresql") == "'.*' .*"
    # A regex replacement's $1 is not a variable.
    assert expand_promql('label_replace(x, "a", "$1", "b", "(.+)")', ctx) == 'label_replace(x, "a", "$1", "b", "(.+)")'
    with pytest.raises(TemplateError, match=r"\$nope"):
        expand_promql("x{a=\"$nope\"}", ctx)


def test_interval_rate_interval_and_range():
    ctx = Expansion(TimeRange.last(6 * 3600), min_interval=15.0)
    assert ctx.interval == 30  # 21,600 s / 1,000 points = 21.6 s, rounded up to 30 s
    assert ctx.rate_interval == 60  # max(30 + 15, 4 x 15)
    assert expand_promql("rate(x[$__rate_interval]) $__range $__range_s", ctx) == "rate(x[1m]) 6h 21600"
    short = Expansion(TimeRange.last(60), min_interval=1.0)
    assert (short.interval, short.rate_interval) == (1.0, 4.0)
    assert duration(0.25) == "250ms" and duration(90) == "90s" and duration(7200) == "2h"
    assert parse_duration("'5m'") == 300 and parse_duration("1d") == 86400
