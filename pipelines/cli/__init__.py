"""Command-line entry points: absl flags -> config objects -> a stage; one-line errors.

``kdprune-<stage>`` console scripts are ``pipelines.cli.<stage>:entry_point``
(also ``python -m pipelines.cli.<stage>``); every flag is defined once in
:mod:`pipelines.cli.flags`.
"""
