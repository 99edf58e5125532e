"""CoreVital viewer as a Streamlit app in dashboards/: the packaged app, so both stay one program.

    streamlit run dashboards/corevital_viewer.py --server.address 127.0.0.1 -- corevital-data/ more-files.jsonl.gz

(`corevital view PATH ...` runs the same app on 127.0.0.1 with the right server flags; see docs/viewer.md.)
Paths after `--` win over the COREVITAL_VIEW_PATHS environment variable; the default is ./corevital-data.
"""

import sys

from opentelemetry_instrumentation_corevital.viewer.app import main

main(sys.argv[1:] or None)
