# The fixtures (pggcl_server_dsn, pggcl_template, pggcl_dsn, empty_dsn, psql) come from
# pggcl's own pytest plugin, the one users get; naming it here keeps the suite working
# even where the package's entry points are not installed.
pytest_plugins = ("pggcl.pytest_plugin",)
