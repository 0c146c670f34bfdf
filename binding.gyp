{
  "targets": [
    {
      "target_name": "mom_native",
      "sources": ["src/native/mom_native.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
