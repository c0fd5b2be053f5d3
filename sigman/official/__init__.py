"""The official SIGMAN release's inference around its networks: its template of Gaussians on the
subdivided SMPL-X mesh, their rotation frames and scales, its calibrated views and its photo
preprocessing. See ``docs/OFFICIAL.md`` for what each part reproduces and how it was checked."""
