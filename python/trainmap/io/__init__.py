"""The ground floor: file safety and file contracts, imported by every stage and importing none.

- :mod:`trainmap.io.atomic`: atomic writes; :mod:`trainmap.io.fileguard`: guarded reads and
  the clobber check; :mod:`trainmap.io.runlock`: the run lock; :mod:`trainmap.io.owner`: owner
  files; :mod:`trainmap.io.limits`: size limits; :mod:`trainmap.io.contracts`: every file
  contract (paths, columns); :mod:`trainmap.io.errors`: error types shared across stages.
"""
