"""The leaves every layer stands on: the error type, the config schema, the run folder's file
names, the keys of fedsim's Flower messages and the import-path registry. They import nothing of
fedsim's but each other, so any module may use them without pulling in torch or Flower.
"""
