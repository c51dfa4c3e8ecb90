"""The JSON Schema files, shipped inside the wheel as package data."""

from pathlib import Path

DIRECTORY = Path(__file__).parent
WORKFLOW_SCHEMA = DIRECTORY / "workflow.schema.json"
WORKFLOW_TEST_SCHEMA = DIRECTORY / "workflow-test.schema.json"
