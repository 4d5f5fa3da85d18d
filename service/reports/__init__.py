"""Reports: answers for people and dashboards built from the rollup store and costs (the LLM
gateway report)."""
