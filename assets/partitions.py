import dagster as dg

# One dynamic partition per data drop; the landing sensor and `curate run` add them.
drops = dg.DynamicPartitionsDefinition(name="drops")
