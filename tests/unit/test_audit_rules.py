from __future__ import annotations

from bosun.images.audit import AuditReport, Finding, _config_findings, _sections


def test_one_penalty_per_check_at_its_worst_severity() -> None:
    r = AuditReport("img", 100.0)
    r.findings += [Finding("setuid/setgid files", "high", f"/bin/{i}") for i in range(10)]
    r.findings += [Finding("package manager caches", "low", "/root/.npm")]
    assert r.score == 100 - 30 - 5
    assert AuditReport("img", 1.0).score == 100


def test_sections_are_split_by_markers() -> None:
    out = "== setuid\n/usr/bin/su\n\n== writable\n== caches\n/root/.npm\n== secrets\n== end\n"
    assert _sections(out) == {"setuid": ["/usr/bin/su"], "writable": [], "caches": ["/root/.npm"], "secrets": [],
                              "end": []}  # fmt: skip


def test_config_checks_user_env_and_history() -> None:
    attrs = {"Config": {"User": "", "Env": ["PATH=/usr/bin", "API_TOKEN=abc", "X=ghp_" + "a" * 36]}}
    history = [{"CreatedBy": "RUN echo -----BEGIN RSA PRIVATE KEY----- > /k"}, {"CreatedBy": "RUN true"}]
    found = _config_findings(attrs, history)
    assert [f.check for f in found] == ["non-root user", "secrets in layers", "secrets in layers", "secrets in layers"]
    assert _config_findings({"Config": {"User": "10001:10001", "Env": ["PATH=/bin"]}}, []) == []
