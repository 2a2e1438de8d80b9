"""Run the box agent. On a box, the rollout playbook puts this file beside the boxagent package
(/srv/slm-deploy/bin/slm-box/__main__.py and .../slm-box/boxagent/), and `python3
/srv/slm-deploy/bin/slm-box ...` runs it with that folder first on sys.path (Python's command line
docs, "<script>": a directory containing __main__.py); here, `python -m slm_deploy.rollout.boxagent`.
"""

import sys

if __package__:  # python -m slm_deploy.rollout.boxagent
    from .cli import main
else:  # python3 DIR: DIR/boxagent is the package
    from boxagent.cli import main  # type: ignore[import-not-found,no-redef]

sys.exit(main())
