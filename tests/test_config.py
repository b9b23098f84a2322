"""Parameters: layered, strict, overridable, and refused with the fix when wrong."""

from __future__ import annotations

import datetime as dt

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from research_lib._io import load_yaml
from research_lib.config import load_config, save_config
from research_lib.errors import ConfigError
from tests.conftest import REPO


def write(path, text):
    path.write_text(text)
    return path


def test_daily_inherits_base_and_overrides_its_own_keys():
    config = load_config(REPO / "params" / "daily.yaml")
    assert config.scenario == "daily"
    assert config.data.source == "bundled"
    assert config.data.start == dt.date(1993, 1, 1)
    assert config.strategy.name == "portfolio", "daily's own key"
    assert config.strategy.lookback_days == 252 and config.portfolio.method == "black_litterman", "from base.yaml"


def test_nested_sections_merge_key_by_key():
    config = load_config(REPO / "params" / "smoke.yaml")
    assert config.data.symbols == ["AAPL", "JPM", "KO", "MSFT", "PFE", "XOM"]
    assert config.data.benchmark == "SP500", "keys the scenario does not set come from base.yaml"
    assert config.strategy.top_n == 2 and config.strategy.lookback_days == 252
    assert config.portfolio.constraints.max_weight == 0.4 and config.portfolio.constraints.side == "long_only"
    assert config.risk.max_weight == 0.3 and config.risk.max_order_notional == 300_000.0


def test_set_overrides_parse_yaml_values():
    config = load_config(REPO / "params" / "daily.yaml", ["backtest.cost_bps=5", "data.symbols=[AAPL, MSFT]", "data.end=2010-12-31"])
    assert config.backtest.cost_bps == 5.0
    assert config.data.symbols == ["AAPL", "MSFT"]
    assert config.data.end == dt.date(2010, 12, 31)


def test_unknown_key_in_file_is_refused_with_a_hint(tmp_path):
    path = write(tmp_path / "p.yaml", "scenario: x\nbacktest:\n  cost_bp: 5\n")
    with pytest.raises(ConfigError, match=r"backtest.cost_bp: unknown key; valid keys here: \['borrow_bps_per_year', 'capital', "
                                           r"'cash_rate_per_year', 'cost_bps', .*\]. Did you mean 'cost_bps'\?"):
        load_config(path)


def test_unknown_override_key_is_refused_with_a_hint():
    with pytest.raises(ConfigError, match=r"Override 'strategy.top=3': 'top' is not a key of strategy; valid keys: .*Did you mean 'top_n'\?"):
        load_config(REPO / "params" / "daily.yaml", ["strategy.top=3"])


def test_bad_choice_lists_the_valid_options():
    with pytest.raises(ConfigError, match=r"data.source: Input should be 'bundled', 'yfinance', 'alpaca', 'polygon', 'file' or 'synthetic' \(got 'bloomberg'\)"):
        load_config(REPO / "params" / "daily.yaml", ["data.source=bloomberg"])


@pytest.mark.parametrize("override, match", [
    ("backtest.cost_bps=-1", r"backtest.cost_bps: Input should be greater than or equal to 0 \(got -1\)"),
    ("backtest.execution_lag_sessions=0", r"execution_lag_sessions: Input should be greater than or equal to 1"),
    ("data.start=2020-01-01", r"start 2020-01-01 is after end 2019-01-01; swap them"),
    ("strategy.skip_days=300", r"skip_days \(300\) must be smaller than lookback_days \(252\)"),
    ("data.symbols=[]", r"data.symbols: Value error, is an empty list"),
    ("data.symbols=[AAPL, AAPL]", r"lists \['AAPL'\] more than once"),
    ("data.source=file", r"source 'file' needs data.path"),
    ("scenario=has space", r"scenario: String should match pattern"),
])
def test_bad_values_name_the_key_and_value(override, match):
    overrides = [override, "data.end=2019-01-01"] if "start" in override else [override]
    with pytest.raises(ConfigError, match=match):
        load_config(REPO / "params" / "daily.yaml", overrides)


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"Override 'cost_bps' is not of the form section.key=value"):
        load_config(REPO / "params" / "daily.yaml", ["cost_bps"])
    with pytest.raises(ConfigError, match=r"Override 'backtest.cost_bps.x=1': 'cost_bps' is a value, not a section"):
        load_config(REPO / "params" / "daily.yaml", ["backtest.cost_bps.x=1"])
    with pytest.raises(ConfigError, match=r"Parameter file .*nope.yaml does not exist"):
        load_config(tmp_path / "nope.yaml")


_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                     st.dates(), st.sampled_from(["yes", "off", "~", ".nan", "-.inf", "1e3", "0x1f", "0o17", "!", "- a"]))


_records = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                              max_size=3), max_leaves=10)


def _edited(draw_value_and_edits) -> str:
    value, cuts = draw_value_and_edits
    text = yaml.safe_dump(value, sort_keys=False, default_flow_style=False)
    for position, insert in cuts:  # a hand edit: characters put anywhere, the hostile ones often
        position %= len(text) + 1
        text = text[:position] + insert + text[position:]
    return text


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    _records.map(lambda value: yaml.safe_dump(value, sort_keys=False, default_flow_style=False)),
    st.tuples(_records, st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(
        ["\t", "!", "! ", ": ", "\n", "#", "- ", "[", "{", "&a ", "*a", "'", '"', "|", "\\", "%", "@", "~", " "])),
        max_size=4)).map(_edited),
    st.text(alphabet="ab:-[]{},#!&*|>'\"\t\n %@`=?.~0", max_size=30)))
def test_load_yaml_reads_what_safe_load_reads_and_refuses_what_it_refuses(text):
    """Promoted records are read by `load_yaml`, ten times faster than ``yaml.safe_load`` on what the
    library writes; a user relies on the same value (safe_load is the oracle) even for a record
    edited by hand, and on PyYAML's error (which quotes the line) for one that is not YAML."""
    try:
        expected = yaml.safe_load(text)
    except yaml.YAMLError as err:
        with pytest.raises(yaml.YAMLError) as raised:
            load_yaml(text)
        assert str(raised.value) == str(err)
        return
    assert repr(load_yaml(text)) == repr(expected)  # repr: NaN equals NaN, 1 is not True


@pytest.mark.parametrize("text", ["params:\n  risk: {max_weight: 0.1\n", "a: b: c\n", "run_id: x\n\tgate: 1\n"])
def test_load_yaml_refuses_with_pyyamls_error_which_quotes_the_line(text):
    with pytest.raises(yaml.YAMLError) as expected:
        yaml.safe_load(text)
    with pytest.raises(yaml.YAMLError) as raised:
        load_yaml(text)
    assert str(raised.value) == str(expected.value) and "^" in str(raised.value)


def test_broken_yaml_non_mapping_and_inheritance_cycle(tmp_path):
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(write(tmp_path / "bad.yaml", "scenario: [unclosed\n"))
    with pytest.raises(ConfigError, match="must hold a mapping of keys to values, not list"):
        load_config(write(tmp_path / "list.yaml", "- a\n- b\n"))
    write(tmp_path / "a.yaml", "inherits: b.yaml\nscenario: a\n")
    write(tmp_path / "b.yaml", "inherits: a.yaml\n")
    with pytest.raises(ConfigError, match="inherits itself"):
        load_config(tmp_path / "a.yaml")


@pytest.mark.parametrize("key", ["alpaca_api_key", "secret", "auth_token"])
def test_secrets_are_refused_in_parameter_files(tmp_path, key):
    path = write(tmp_path / "p.yaml", f"scenario: x\ndata:\n  {key}: abc\n")
    with pytest.raises(ConfigError, match=rf"key 'data.{key}' looks like a secret.*environment or a git-ignored .env"):
        load_config(path)


def test_resolved_config_round_trips_without_inherits(tmp_path):
    config = load_config(REPO / "params" / "smoke.yaml", ["backtest.cost_bps=7.5"])
    saved = save_config(config, tmp_path / "config.yaml")
    assert "inherits" not in yaml.safe_load(saved.read_text())
    assert load_config(saved) == config


def test_override_into_a_section_left_empty(tmp_path):
    path = write(tmp_path / "p.yaml", "scenario: x\nreport:\n")
    assert load_config(path, ["report.title=Hello"]).report.title == "Hello"


def test_a_secret_from_the_environment_is_refused_as_a_value(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-canary-abcdef")
    with pytest.raises(ConfigError, match=r"the value of 'report.title' contains an API key from the environment"):
        load_config(REPO / "params" / "smoke.yaml", ["report.title=sk-ant-canary-abcdef"])


def test_ml_signal_model_must_be_fitted():
    with pytest.raises(ConfigError, match=r"signal_model 'hgbr' is not in models \['ridge'\]"):
        load_config(REPO / "params" / "smoke.yaml", ["ml.models=[ridge]"])


def test_a_long_short_portfolio_needs_the_risk_layer_to_allow_shorts():
    short_book = ["portfolio.constraints={side: long_short, max_weight: 0.3}"]
    with pytest.raises(ConfigError, match="risk.allow_short is false.*set risk.allow_short: true"):
        load_config(REPO / "params" / "smoke.yaml", short_book)
    assert load_config(REPO / "params" / "smoke.yaml", [*short_book, "risk.allow_short=true"]).risk.allow_short


def test_vol_target_cannot_look_further_back_than_the_portfolio():
    with pytest.raises(ConfigError, match=r"vol_target.lookback_days \(300\) exceeds lookback_days \(252\)"):
        load_config(REPO / "params" / "smoke.yaml", ["portfolio.vol_target={target_vol: 0.1, lookback_days: 300}"])


def test_the_backtest_model_scales_trading_costs_for_stress_but_not_financing():
    from research_lib.config import BacktestConfig

    costs = BacktestConfig(cost_bps=10, spread_bps=2, impact_coefficient=0.1, borrow_bps_per_year=50,
                           cash_rate_per_year=0.02)
    assert costs.model(2.0, capital=1e6) == {
        "cost_bps": 20.0, "execution_lag_sessions": 1, "spread_bps": 4.0, "impact_coefficient": 0.2,
        "capital": 1e6, "borrow_bps_per_year": 50, "cash_rate_per_year": 0.02}
    assert costs.model_copy(update={"capital": 5e5}).model(capital=1e6)["capital"] == 5e5, "its own capital first"
    assert BacktestConfig().model(capital=1e6)["capital"] is None, "no impact: no capital needed"

