"""Pipeline definitions; `compiled/` holds their committed YAML (`swiperec pipeline compile`)."""
