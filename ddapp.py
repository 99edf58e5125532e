import os, torch
os.environ["HF_HUB_OFFLINE"]="1"
from ddtrace import tracer
from ddtrace.opentelemetry import TracerProvider
from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor
from opentelemetry_instrumentation_corevital.testing import tiny_causal_lm
m = tiny_causal_lm()
reports=[]
CoreVitalInstrumentor().instrument(tracer_provider=TracerProvider(), on_report=reports.append, max_span_steps=8)
p = torch.tensor([[1,17,42,99]])
with tracer.trace("web.request", service="app"):
    m.generate(p, attention_mask=torch.ones_like(p), max_new_tokens=5, do_sample=False)
tracer.flush()
print(reports[0].summary.risk_score)
