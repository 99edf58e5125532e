"""rotel logs processor: drop CoreVital's per-step log records (event_name "corevital.generation.step")."""

STEP_EVENT = "corevital.generation.step"


def process_logs(resource_logs):
    for scope_logs in resource_logs.scope_logs:
        scope_logs.log_records = [r for r in scope_logs.log_records if r.event_name != STEP_EVENT]
