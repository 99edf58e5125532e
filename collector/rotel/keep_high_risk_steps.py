"""rotel logs processor: keep only per-step log records of generations whose corevital.risk.level is "high"."""

STEP_EVENT = "corevital.generation.step"


def _risk_level(record):
    for kv in record.attributes:
        if kv.key == "corevital.risk.level":
            return kv.value.value
    return None


def process_logs(resource_logs):
    for scope_logs in resource_logs.scope_logs:
        scope_logs.log_records = [
            r for r in scope_logs.log_records if r.event_name == STEP_EVENT and _risk_level(r) == "high"
        ]
