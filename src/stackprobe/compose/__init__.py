"""Docker Compose files: parse them (short and long syntax), lint them, turn them into stacks.

    loader.py    the YAML as Compose reads it (1.2 scalars, merge keys, !reset/!override), safely
    env.py       Compose interpolation and the .env / env_file format
    resolve.py   include and extends, merged by the Compose specification's rules
    model.py     parse a Compose file into typed services (ports, volumes, depends_on, ...)
    lifecycle.py one-shot jobs and long-running services, and why
    images.py    what stackprobe knows about images: kind, data dirs, admin ports, tools
    lint.py      the rules behind `stackprobe compose lint` and the compose kind's checks
    discover.py  a stack file from a Compose file (`stackprobe discover --compose`)
    engine.py    a small Docker Engine API client for the live orchestration checks

The CLI verbs and the `compose` kind are thin layers over these modules.
"""
