"""Running exported segmenters on video: sources, backends, pipeline, render and sinks.

`uda-adapt run MODEL INPUT [OUTPUT]` and `uda-adapt bench MODEL` are thin wrappers over
`runtime.stream.run_stream` and `runtime.bench.bench`.
"""
