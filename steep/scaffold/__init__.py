"""`steep init`: write a commented steep.yaml (and a .gitignore line) for a new project.

- `columns`: each column of the data profiled, and the id/text/summary/group mapping proposed from names and
  contents; a QUESTION instead of a guess where the evidence is not clear
- `render`: steep.yaml rendered from the SteepConfig model itself (every key, default and description), so the
  file can never drift from the model
- `project`: the project name, the data source, the model instruction (steep.instruction), steep.yaml and the
  .gitignore line written

Today's public names stay importable from here (`from steep.scaffold import write_project`).
"""

from steep.scaffold.columns import (
    ROLES,
    ColumnProfile,
    ColumnProposal,
    RoleProposal,
    min_groups,
    profile_column,
    propose_columns,
)
from steep.scaffold.project import (
    FALLBACK_NAME,
    GITIGNORE_LINE,
    InitResult,
    choose_name,
    ensure_gitignore,
    instruction_for,
    project_config,
    read_data,
    slug,
    source_for,
    write_project,
)
from steep.scaffold.render import HEADER, LINE_WIDTH, model_paths, render_config, yaml_value

__all__ = [
    "FALLBACK_NAME",
    "GITIGNORE_LINE",
    "HEADER",
    "LINE_WIDTH",
    "ROLES",
    "ColumnProfile",
    "ColumnProposal",
    "InitResult",
    "RoleProposal",
    "choose_name",
    "ensure_gitignore",
    "instruction_for",
    "min_groups",
    "model_paths",
    "profile_column",
    "project_config",
    "propose_columns",
    "read_data",
    "render_config",
    "slug",
    "source_for",
    "write_project",
    "yaml_value",
]
