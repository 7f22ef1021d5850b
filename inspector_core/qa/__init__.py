"""What QA engineers use: typed filters, history, statistics, SPC, what-if (read together
through :mod:`inspector_core.qa.query`), the QA command line and the web dashboard."""
