func.func @f() {
  %y = sq.nonexistent
  return
}
