import re
import urllib.parse

import pytest

from swarm import config
from swarm.backends import redact
from swarm.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "swarm.toml"
    path.write_text(text)
    return str(path)


def test_defaults_are_embedded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config.load(env={})
    assert cfg["backends"]["broker"] == "memory://"
    assert cfg["worker"]["lease"] == 60.0
    assert (cfg["jobs"]["max_queue"], cfg["master"]["window"]) == (0, 10000)  # unbounded stages, a window


def test_file_then_env_override(tmp_path):
    path = write(tmp_path, '[backends]\nbroker = "amqp://guest:guest@mq:5672/%2F"\n[worker]\nlease = 30\n'
                           '[options.merchant_daily]\nchunks = 64\n')
    cfg = config.load(path, env={"SWARM_WORKER_LEASE": "12.5", "SWARM_WORKER_STAGES": "scan, reduce"})
    assert cfg["worker"]["lease"] == 12.5
    assert cfg["worker"]["stages"] == ["scan", "reduce"]
    assert cfg.options("merchant_daily") == {"chunks": 64}
    assert cfg.describe()["backends"]["broker"] == "amqp://guest:***@mq:5672/%2F"


@pytest.mark.parametrize("text, env, key", [
    ("[worker]\nleese = 3\n", {}, "worker.leese"),
    ("[wroker]\n", {}, "wroker"),
    ("[worker]\nlease = 'soon'\n", {}, "worker.lease"),
    ("[worker]\nprocesses = 'many'\n", {}, "worker.processes"),
    ("", {"SWARM_MASTER_POLLL": "1"}, "master.polll"),
    ("", {"SWARM_MASTER_POLL": "-1"}, "master.poll"),
    ("[backends]\nledger = 'postgres://x'\n", {}, "backends.ledger"),
    ("[backends\n", {}, "not valid TOML"),
    ("[master]\ndeadline = '7am'\n", {}, "master.deadline"),
    ("[jobs]\nmax_queue = -1\n", {}, "jobs.max_queue"),
    ("", {"SWARM_MASTER_WINDOW": "-5"}, "master.window"),
    ("[master]\nwindow = 'wide'\n", {}, "master.window"),
])
def test_bad_config_names_the_key(tmp_path, text, env, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.load(write(tmp_path, text), env=env)


@pytest.mark.parametrize("name, says", [
    ("SWARM_WROKER_LEASE", "SWARM_WROKER_LEASE names no Swarm setting (did you mean SWARM_WORKER_LEASE?)"),
    ("SWARM_worker_lease", "SWARM_worker_lease names no Swarm setting (did you mean SWARM_WORKER_LEASE?)"),
    ("SWARM_BACKEND_BROKER", "SWARM_BACKEND_BROKER names no Swarm setting (did you mean SWARM_BACKENDS_BROKER?)"),
    ("SWARM_FAILPOINT", "SWARM_FAILPOINT names no Swarm setting (did you mean SWARM_FAILPOINTS?)"),
    ("SWARM_HOME", "SWARM_HOME names no Swarm setting; settings are SWARM_<SECTION>_<KEY>, sections backends,"),
    ("SWARM_SECURITY_KEYFILE", "SWARM_SECURITY_KEYFILE names unknown key security.keyfile "
                               "(did you mean SWARM_SECURITY_KEY_FILE?); known keys of [security]: key_file,"),
])
def test_a_swarm_variable_that_sets_nothing_stops_the_command_naming_it(tmp_path, monkeypatch, name, says):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        config.load(env={name: "30"})
    assert str(err.value).startswith(f"environment variable {says}")


def test_variables_that_are_not_settings_are_allowed_only_when_listed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "SWARM_FAILPOINTS" in config.ENV_NOT_SETTINGS
    cfg = config.load(env={"SWARM_FAILPOINTS": "worker.after_apply=0.05", "SWARMING": "x", "PATH": "/bin"})
    assert cfg["worker"]["lease"] == 60.0


def test_job_options_come_from_the_environment_too_and_win_over_the_file(tmp_path):
    path = write(tmp_path, '[options.merchant_daily]\nchunks = 64\nregion = "eu"\n')
    env = {"SWARM_OPTIONS__MERCHANT_DAILY__CHUNKS": "8", "SWARM_OPTIONS__MERCHANT_DAILY__DRY_RUN": "true",
           "SWARM_OPTIONS__MERCHANT_DAILY__LABEL": '"8"', "SWARM_OPTIONS__MERCHANT_DAILY__BUCKETS": "[1, 2]",
           "SWARM_OPTIONS__MERCHANT_DAILY__NOTE": "plain text", "SWARM_OPTIONS__MERCHANT_DAILY__TWO": "1\nx = 2",
           "SWARM_OPTIONS__URL_DAILY__MAX_URLS": "100"}
    cfg = config.load(path, env=env)
    assert cfg.options("merchant_daily") == {"chunks": 8, "region": "eu", "dry_run": True, "label": "8",
                                             "buckets": [1, 2], "note": "plain text", "two": "1\nx = 2"}
    assert cfg.options("url_daily") == {"max_urls": 100}


@pytest.mark.parametrize("name", [
    "SWARM_OPTIONS_MERCHANT_DAILY_CHUNKS",  # single underscores: where does the job end?
    "SWARM_OPTIONS__MERCHANT_DAILY",  # no key
    "SWARM_OPTIONS____CHUNKS",  # no job
    "SWARM_OPTIONS__MERCHANT_DAILY__",  # an empty key
    "SWARM_OPTIONS__MERCHANT__DAILY__CHUNKS",  # three parts
])
def test_a_malformed_job_option_variable_names_itself_and_the_form(tmp_path, name):
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, ""), env={name: "8"})
    assert str(err.value) == (f"environment variable {name}: a job option is set as SWARM_OPTIONS__<JOB>__<KEY>, "
                              f"with two underscores before the job and before the key, as in "
                              f"SWARM_OPTIONS__MERCHANT_DAILY__CHUNKS")


@pytest.mark.parametrize("text, says", [
    ("options = 3\n", "[options] in {file} must be a table of per-job tables"),
    ("[options]\nmerchant_daily = 64\n", "options.merchant_daily in {file} must be a table, "
                                          "[options.merchant_daily], got int"),
])
def test_options_in_the_file_must_be_per_job_tables(tmp_path, text, says):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        config.load(path, env={})
    assert str(err.value) == says.format(file=path)


def test_errors_never_show_a_password(tmp_path):
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, "[backends]\nledger = 'postgres://root:hunter2@db/x'\n"), env={})
    assert "hunter2" not in str(err.value) and "***" in str(err.value)


def test_missing_file_is_an_error():
    with pytest.raises(ConfigError, match="does not exist"):
        config.load("/nonexistent/swarm.toml", env={})


# -- passwords from files ---------------------------------------------------------------------

SECRET = "s3cret/p@ss:w%rd"  # characters a URL must encode


def password_file(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_password_file_becomes_the_urls_password(tmp_path):
    broker_pw = password_file(tmp_path, "broker.password", SECRET + "\n")
    ledger_pw = password_file(tmp_path, "ledger.password", "plain\r\n")
    path = write(tmp_path, f'[backends]\nbroker = "amqps://swarm@mq1/%2F?ssl_ca=/etc/ca.pem"\n'
                           f'broker_password_file = "{broker_pw}"\n'
                           f'ledger = "mysql://swarm@db1:3306/swarm"\nledger_password_file = "{ledger_pw}"\n')
    cfg = config.load(path, env={})
    broker = cfg["backends"]["broker"]
    assert broker == "amqps://swarm:s3cret%2Fp%40ss%3Aw%25rd@mq1/%2F?ssl_ca=/etc/ca.pem"
    assert cfg["backends"]["ledger"] == "mysql://swarm:plain@db1:3306/swarm"
    assert cfg.describe()["backends"]["broker"] == "amqps://swarm:***@mq1/%2F?ssl_ca=/etc/ca.pem"
    assert cfg.describe()["backends"]["broker_password_file"] == broker_pw


def test_a_password_from_a_file_reaches_both_clients_intact(tmp_path):
    from swarm.brokers.rabbitmq import _parse_url
    from swarm.ledgers.mysql import parse_url

    env = {"SWARM_BACKENDS_BROKER": "amqp://swarm@mq1/%2F", "SWARM_BACKENDS_LEDGER": "mysql://swarm@db1/swarm",
           "SWARM_BACKENDS_BROKER_PASSWORD_FILE": password_file(tmp_path, "b", SECRET),
           "SWARM_BACKENDS_LEDGER_PASSWORD_FILE": password_file(tmp_path, "l", SECRET)}
    cfg = config.load(write(tmp_path, ""), env=env)
    assert _parse_url(cfg["backends"]["broker"]).params.credentials.password == SECRET
    assert parse_url(cfg["backends"]["ledger"]).password == SECRET


@pytest.mark.parametrize("url, says", [
    ("amqp://swarm:inline@mq1/%2F", "backends.broker has a password and backends.broker_password_file is set: "
                                    "use one or the other"),
    ("amqp://mq1/%2F", "backends.broker_password_file is set but backends.broker names no user"),
    ("memory://", "backends.broker names no user"),
])
def test_a_password_file_needs_a_url_with_a_user_and_no_password(tmp_path, url, says):
    env = {"SWARM_BACKENDS_BROKER": url, "SWARM_BACKENDS_BROKER_PASSWORD_FILE": password_file(tmp_path, "pw", "x")}
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, ""), env=env)
    assert says in str(err.value) and "inline" not in str(err.value)


@pytest.mark.parametrize("file_text, says", [
    (None, "backends.ledger_password_file: cannot read {path}: No such file or directory"),
    ("\n", "backends.ledger_password_file: {path} is empty"),
])
def test_an_unusable_password_file_is_named_with_its_key(tmp_path, file_text, says):
    path = str(tmp_path / "missing") if file_text is None else password_file(tmp_path, "pw", file_text)
    env = {"SWARM_BACKENDS_LEDGER": "mysql://swarm@db1/swarm", "SWARM_BACKENDS_LEDGER_PASSWORD_FILE": path}
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, ""), env=env)
    assert str(err.value) == says.format(path=path)


# the site key ------------------------------------------------------------------------------


def key_file(tmp_path, name="site.key", text="a" * 64, mode=0o600):
    path = tmp_path / name
    path.write_text(text + "\n")
    path.chmod(mode)
    return str(path)


def test_the_site_key_comes_from_a_file_and_is_never_shown(tmp_path):
    from swarm.signing import for_site, key_id

    path = write(tmp_path, f'[backends]\nbroker = "amqp://mq/%2F"\n[security]\nkey_file = "{key_file(tmp_path)}"\n')
    cfg = config.load(path, env={})
    keys = for_site(cfg["security"], cfg["backends"]["broker"])
    assert keys.current_id == key_id(b"a" * 64)
    assert "a" * 16 not in repr(keys) and "a" * 16 not in str(cfg.describe())


def test_the_site_key_may_come_from_the_environment_but_not_from_the_file(tmp_path):
    from swarm.signing import from_settings

    env = {"SWARM_SECURITY_KEY": "k" * 40, "SWARM_SECURITY_PREVIOUS_KEY": "o" * 40}
    cfg = config.load(write(tmp_path, ""), env=env)
    assert cfg.describe()["security"]["key"] == "***" and cfg.describe()["security"]["previous_key"] == "***"
    assert from_settings(cfg["security"]) is not None
    with pytest.raises(ConfigError, match="security.key cannot be written in") as refused:
        config.load(write(tmp_path, f'[security]\nkey = "{"s" * 40}"\n'), env={})
    assert "s" * 40 not in str(refused.value)


@pytest.mark.parametrize("settings, message", [
    ({"key_file": "/nonexistent/site.key"}, "cannot read /nonexistent/site.key"),
    ({"key": "short"}, "at least 32"),
    ({"previous_key": "p" * 40}, "no current key"),
])
def test_a_bad_site_key_setting_names_what_is_wrong(settings, message):
    from swarm.signing import from_settings

    with pytest.raises(ConfigError, match=message):
        from_settings(settings)


def test_a_key_file_others_can_read_is_refused(tmp_path):
    from swarm.signing import from_settings

    with pytest.raises(ConfigError, match="readable by others"):
        from_settings({"key_file": key_file(tmp_path, mode=0o644)})
    assert from_settings({"key_file": key_file(tmp_path, "group.key", mode=0o640)}) is not None
    with pytest.raises(ConfigError, match="is empty"):
        from_settings({"key_file": key_file(tmp_path, "empty.key", text="")})
    with pytest.raises(ConfigError, match="both set"):
        from_settings({"key_file": key_file(tmp_path), "key": "k" * 40})


def test_a_shared_broker_needs_a_site_key_and_the_in_process_one_does_not():
    from swarm.signing import for_site, process_keys

    assert for_site({}, "memory://x") is process_keys()
    with pytest.raises(ConfigError, match="security.key_file: a shared broker needs the site key"):
        for_site({}, "amqp://guest:guest@mq/%2F")


# -- passwords in URLs -------------------------------------------------------------------------

# Each holds a character a URL password must have percent-encoded; the pieces around it are
# what must never be shown, as each would be a part of the password.
UNENCODED = {
    "@ and / and a bare %, as in user:p@ss/w%rd": "Qxa@Zrv/Wk%Jd",
    "#": "Qxa#Zrv",
    "a space": "Qxa Zrv",
    "% not followed by two hex digits": "Qxa%ZrvJ",
    "% at the end": "QxaZrv%2",
    "/": "Qxa/Zrv",
    "?": "Qxa?Zrv",
    "@": "Qxa@Zrv",
}


def pieces(password: str) -> list[str]:
    return [p for p in re.split(r"[^A-Za-z0-9]", password) if len(p) >= 2]


@pytest.mark.parametrize("password", UNENCODED.values(), ids=UNENCODED.keys())
@pytest.mark.parametrize("key, url", [
    ("backends.broker", "amqp://swarm:{}@mq1:5672/swarm"),
    ("backends.ledger", "mysql://swarm:{}@db1:3306/swarm"),
    ("autoscale.supervisor_url", "http://admin:{}@127.0.0.1:9001"),
])
def test_an_unencoded_password_is_refused_saying_how_to_encode_it_and_showing_none_of_it(tmp_path, key, url, password):
    section, name = key.split(".")
    path = write(tmp_path, f'[{section}]\n{name} = "{url.format(password)}"\n')
    with pytest.raises(ConfigError) as err:
        config.load(path, env={})
    said = str(err.value)
    assert said.startswith(f"{key}, set in {path}: cannot tell the user and password")
    assert "urllib.parse.quote(password, safe='')" in said
    assert not [p for p in pieces(password) if p in said], said
    assert redact(url.format(password)) == "<unparseable URL>"


def test_the_brief_example_and_its_parts_are_never_shown(tmp_path):
    url = "amqp://user:p@ss/w%rd@host/vh"
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, ""), env={"SWARM_BACKENDS_BROKER": url})
    said = str(err.value)
    assert said.startswith("backends.broker, set by SWARM_BACKENDS_BROKER (config file")
    assert "backends.broker_password_file" in said
    assert not [part for part in ("p@ss", "ss/w", "w%rd", ":p@", "@ss", "@host") if part in said]
    assert redact(url) == "<unparseable URL>"


@pytest.mark.parametrize("url", [
    "amqp://swarm:secret@mq1/vh@2",  # an @ after the host
    "amqps://swarm:secret@mq1/%2F?ssl_ca=/etc/ca@1.pem",  # even in an option's value: %40
    "amqp://swarm:secret@mq1/%2F#x",  # a fragment
])
def test_an_at_or_hash_after_the_host_is_refused_too(tmp_path, url):
    with pytest.raises(ConfigError, match="an @ or # anywhere else in the URL is written %40 or %23"):
        config.load(write(tmp_path, ""), env={"SWARM_BACKENDS_BROKER": url})
    assert redact(url) == "<unparseable URL>"


@pytest.mark.parametrize("password", [*UNENCODED.values(), "p@ss/w%rd", "a:b", "~!$&'()*+,;="])
def test_an_encoded_password_reaches_the_clients_decoded_and_is_shown_as_stars(tmp_path, password):
    from swarm.autoscale import _credentials
    from swarm.brokers.rabbitmq import _parse_url
    from swarm.ledgers.mysql import parse_url

    encoded = urllib.parse.quote(password, safe="")
    env = {"SWARM_BACKENDS_BROKER": f"amqp://swarm:{encoded}@mq1:5672/swarm",
           "SWARM_BACKENDS_LEDGER": f"mysql://swarm:{encoded}@db1:3306/swarm",
           "SWARM_AUTOSCALE_SUPERVISOR_URL": f"http://admin:{encoded}@127.0.0.1:9001"}
    cfg = config.load(write(tmp_path, ""), env=env)
    assert _parse_url(cfg["backends"]["broker"]).params.credentials.password == password
    assert parse_url(cfg["backends"]["ledger"]).password == password
    assert _credentials(cfg["autoscale"]["supervisor_url"])[1] == password
    shown = cfg.describe()
    assert shown["backends"]["broker"] == "amqp://swarm:***@mq1:5672/swarm"
    assert shown["backends"]["ledger"] == "mysql://swarm:***@db1:3306/swarm"
    assert shown["autoscale"]["supervisor_url"] == "http://admin:***@127.0.0.1:9001"


@pytest.mark.parametrize("url", ["sqlite:///data/run@1/swarm.db", "embedded:///data/t#1.db", "memory://",
                                 "amqps://swarm@mq1/%2F?ssl_ca=/etc/ca.pem", "hbase://[::1]:9090"])
def test_urls_without_credentials_or_host_are_left_alone(url):
    assert redact(url) == url


@pytest.mark.parametrize("url, shown", [
    ("amqp://swarm:Qxa9@mq1:56x2/%2F", "amqp://mq1:..."),
    ("amqp://swarm:Qxa9", "amqp://swarm:..."),  # no host: the "port" is the password
])
def test_a_port_that_is_not_a_number_is_refused_without_showing_it(tmp_path, url, shown):
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, ""), env={"SWARM_BACKENDS_BROKER": url})
    assert str(err.value) == f"backends.broker: the port in {shown} is not a number from 0 to 65535"


def test_redact_never_half_masks():
    assert redact("amqp://user:p@ss@host/vh") == "<unparseable URL>"
    assert redact("amqp://user:pass") == "amqp://user"  # no @: the "port" is a password
    assert redact("amqp:user:pass@host") == "<unparseable URL>"
    assert redact("amqp://user:p%41ss@host/vh") == "amqp://user:***@host/vh"
