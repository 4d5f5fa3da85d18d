"""Reports: answers for people (the `report` command's tables, CSV and JSON) and the LLM gateway
report (GET /v1/reports/llm), built from the rollup store and costs."""
