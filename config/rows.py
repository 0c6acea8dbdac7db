"""Rows of the service path read and written by statements built once per process (PostgreSQL).

Each intake and action locks its incident, and inserts timeline rows, events and orders. Through the
ORM every such call builds its SQL anew — the queryset, the compiler, quoting every column — which
costs more than the statement's round trip: 0.9 ms for a locked primary-key read of an incident
against 0.28 ms here (docs/performance.md, "Dispatch"). These helpers build the statement once per
model (and row count), then only bind values; rows come back through the model's own `from_db` and the
fields' converters, and values go in through each field's `pre_save` and `get_db_prep_save`, so the
models behave exactly as the ORM makes them. Unlike `save()`/`bulk_create()` they send no
pre_save/post_save signals: use them only for models that no receiver listens to. Elsewhere than on
PostgreSQL they are the ORM calls themselves.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, NamedTuple, TypeVar

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.models import Model
from django.db.transaction import TransactionManagementError

M = TypeVar("M", bound=Model)

_lock = threading.Lock()
# (model, extra SQL, locked) -> (SQL, attnames in select order, converters by column position, compiler)
_locking: dict[
    tuple[type[Model], str, bool],
    tuple[str, list[str], dict[int, tuple[list[Callable[..., Any]], Any]], Any],
] = {}
# (model, rows; 0 for any number through UNNEST) -> the INSERT
_inserting: dict[tuple[type[Model], int], InsertPlan] = {}
# (model, field names) -> (SQL, fields set)
_updating: dict[tuple[type[Model], tuple[str, ...]], tuple[str, list[Any]]] = {}


def _locking_plan(
    model: type[Model], extra: str = "", lock: bool = True
) -> tuple[str, list[str], dict[int, tuple[list[Any], Any]], Any]:
    plan = _locking.get((model, extra, lock))
    if plan is None:
        manager = model._default_manager
        query = (manager.select_for_update() if lock else manager.all()).filter(pk=0).query
        compiler = query.get_compiler(connection.alias)
        sql, _params = compiler.as_sql()  # the one parameter is the primary key
        names = [column.target.attname for column, _sql, _alias in compiler.select]
        converters = compiler.get_converters([column for column, _sql, _alias in compiler.select])
        if extra:  # more values after the model's columns (the first FROM is the table's)
            sql = sql.replace(" FROM ", f", {extra} FROM ", 1)
        plan = (sql, names, converters, compiler)
        with _lock:
            _locking[(model, extra, lock)] = plan
    return plan


def lock_row(model: type[M], pk: int) -> M:
    """The row `pk` of model, locked FOR UPDATE in the current transaction (DoesNotExist if none)."""
    if connection.vendor != "postgresql":
        return model._default_manager.select_for_update().get(pk=pk)
    return lock_row_with(model, pk, "")[0]


def lock_row_with(model: type[M], pk: int, extra: str) -> tuple[M, tuple[Any, ...]]:
    """`lock_row` (PostgreSQL), and the values of the SQL expressions `extra` for the row in the same trip.

    extra is SQL of ours (a constant per call site, never user input): one or more comma-separated
    expressions, e.g. a correlated ARRAY(...) and scalar subqueries; their values come back in order.
    """
    if connection.get_autocommit():  # as the ORM refuses it: a lock outside a transaction holds nothing
        raise TransactionManagementError("lock_row cannot be used outside of a transaction.")
    return _read_row_with(model, pk, extra, lock=True)


def read_row_with(model: type[M], pk: int, extra: str) -> tuple[M, tuple[Any, ...]]:
    """`lock_row_with` without the lock: the row as committed, for a step that must not wait on it."""
    return _read_row_with(model, pk, extra, lock=False)


def _read_row_with(model: type[M], pk: int, extra: str, *, lock: bool) -> tuple[M, tuple[Any, ...]]:
    sql, names, converters, compiler = _locking_plan(model, extra, lock)
    with connection.cursor() as cursor:
        cursor.execute(sql, [pk])
        row = cursor.fetchone()
    if row is None:
        missing: type[Exception] = getattr(model, "DoesNotExist")  # noqa: B009 (set on every concrete model)
        raise missing(f"{model.__name__} matching query does not exist.")
    values = tuple(row[len(names) :])
    row = row[: len(names)]
    if converters:
        row = next(iter(compiler.apply_converters([row], converters)))
    instance: M = model.from_db(connection.alias, names, row)
    return instance, values


class InsertPlan(NamedTuple):
    """An INSERT of one model's rows: its SQL, the fields it writes, and how their values are passed."""

    sql: str
    fields: list[Any]
    # One array per field (UNNEST), rather than one placeholder per row and field.
    columnar: bool


def _unnestable(fields: Sequence[Any]) -> bool:
    """Whether every field's values can travel as one typed array (as Django's own bulk insert decides)."""
    return not any(hasattr(f, "get_placeholder") for f in fields) and all(
        (f.target_field if f.is_relation else f).get_internal_type() in connection.data_types for f in fields
    )


def insert_plan(model: type[Model], rows: int) -> InsertPlan:
    """``INSERT INTO <model's table> (...) ... RETURNING <pk>`` for rows rows, and its fields.

    One row: ``VALUES (%s, ...)``. Several: ``SELECT * FROM UNNEST(%s::type[], ...)``, one array per
    field, as Django's bulk_create does on PostgreSQL: the same text and number of parameters for any
    number of rows, so one prepared statement serves them all and psycopg's query cache keeps it (it
    skips statements of over 50 parameters: three orders of 34 fields took 102). The primary keys come
    back in the order of the rows. Built once per model (and row count where it matters). For a caller
    that puts the INSERT inside a larger statement; `insert_rows` is the whole job for everyone else.
    """
    plan = (_inserting.get((model, 0)) if rows > 1 else None) or _inserting.get((model, rows))
    if plan is None:
        meta = model._meta
        fields = [f for f in meta.concrete_fields if f is not meta.pk]
        columnar = rows > 1 and _unnestable(fields)
        key = (model, 0 if columnar else rows)
        quote = connection.ops.quote_name
        columns = ", ".join(quote(str(f.column)) for f in fields)
        if columnar:
            # The type without its length (varchar[], not varchar(64)[]), so nothing is cut on the way.
            arrays = ", ".join(f"%b::{str(f.db_type(connection)).split('(')[0]}[]" for f in fields)
            source = f"SELECT * FROM UNNEST({arrays})"
        else:
            source = "VALUES " + ", ".join(["(" + ", ".join(["%s"] * len(fields)) + ")"] * rows)
        table, pk = quote(meta.db_table), quote(str(meta.pk.column))
        sql = f"INSERT INTO {table} ({columns}) {source} RETURNING {pk}"
        plan = InsertPlan(sql, fields, columnar)
        with _lock:
            if len(_inserting) < 256:  # a handful of models and row counts; never unbounded
                _inserting[key] = plan
    return plan


def insert_params(objs: Sequence[Model], plan: InsertPlan) -> list[Any]:
    """The values of the plan's fields for objs, as `save()` would write them (pre_save included)."""
    # The connection itself, not the `connection` proxy: each field's conversion asks it for its
    # operations, and through the proxy every such question is a context-local lookup (half the time).
    if plan.columnar:
        return column_arrays(objs, plan.fields)
    db = connections[DEFAULT_DB_ALIAS]
    return [f.get_db_prep_save(f.pre_save(obj, True), db) for obj in objs for f in plan.fields]


def column_arrays(objs: Sequence[Model], fields: Sequence[Any]) -> list[list[Any]]:
    """One array per field of the new rows objs (as `save()` would write them), for ``unnest(...)``."""
    db = connections[DEFAULT_DB_ALIAS]  # not the proxy (see insert_params)
    return [[f.get_db_prep_save(f.pre_save(obj, True), db) for obj in objs] for f in fields]


def inserted(objs: Sequence[Model], ids: Sequence[Any]) -> None:
    """Mark objs as stored under the primary keys their INSERT returned (in their order)."""
    for obj, pk in zip(objs, ids, strict=True):
        obj.pk = pk
        obj._state.adding, obj._state.db = False, connection.alias


def insert_rows(objs: Sequence[Model]) -> None:
    """INSERT objs (new, of one model, with no primary key yet) in one statement; set their primary keys."""
    if not objs:
        return
    if any(obj.pk is not None for obj in objs):
        raise ValueError("insert_rows writes new rows: their primary keys are the database's to give")
    model = type(objs[0])
    if connection.vendor != "postgresql":
        if len(objs) == 1:
            objs[0].save(force_insert=True)
        else:
            model._default_manager.bulk_create(list(objs))
        return
    plan = insert_plan(model, len(objs))
    execute_then(plan.sql, insert_params(objs, plan), lambda rows: inserted(objs, [row[0] for row in rows]))


def _update_plan(model: type[Model], key: tuple[str, ...]) -> tuple[str, list[Any]]:
    """``UPDATE <table> SET <columns> = %s, ... WHERE <pk> = %s`` for the named fields (built once)."""
    plan = _updating.get((model, key))
    if plan is None:
        meta = model._meta
        by_name = {f.name: f for f in meta.concrete_fields}
        fields = [by_name[name] for name in key]
        quote = connection.ops.quote_name
        assignments = ", ".join(f"{quote(str(f.column))} = %s" for f in fields)
        sql = f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {quote(str(meta.pk.column))} = %s"
        plan = (sql, fields)
        with _lock:
            if len(_updating) < 256:
                _updating[(model, key)] = plan
    return plan


def _update_params(obj: Model, fields: Sequence[Any]) -> list[Any]:
    db = connections[DEFAULT_DB_ALIAS]  # not the proxy (see insert_params)
    return [*[f.get_db_prep_save(f.pre_save(obj, False), db) for f in fields], obj.pk]


def _missing(obj: Model) -> Exception:
    missing: type[Exception] = getattr(type(obj), "DoesNotExist")  # noqa: B009
    return missing(f"{type(obj).__name__} {obj.pk} was not there to update")


def update_row(obj: Model, field_names: Sequence[str]) -> None:
    """UPDATE the named fields of obj's row (as ``save(update_fields=...)`` writes them) in one statement."""
    if connection.vendor != "postgresql":
        obj.save(update_fields=list(field_names))
        return
    sql, fields = _update_plan(type(obj), tuple(field_names))
    with connection.cursor() as cursor:
        cursor.execute(sql, _update_params(obj, fields))
        if cursor.rowcount != 1:
            raise _missing(obj)


def update_row_and_insert(obj: Model, field_names: Sequence[str], objs: Sequence[Model]) -> None:
    """`update_row(obj, field_names)` and `insert_rows(objs)` in one statement (PostgreSQL).

    The UPDATE is a data-modifying CTE of the INSERT: one round trip, both done or neither. For a state
    change and the timeline row that records it, written together at every step of the closed loop.
    Elsewhere the two calls in turn.
    """
    if connection.vendor != "postgresql" or not objs:
        update_row(obj, field_names)
        insert_rows(objs)
        return
    if any(new.pk is not None for new in objs):
        raise ValueError("insert_rows writes new rows: their primary keys are the database's to give")
    update, update_fields = _update_plan(type(obj), tuple(field_names))
    insert = insert_plan(type(objs[0]), len(objs))

    def then(rows: list[tuple[Any, ...]]) -> None:
        if int(rows[0][1]) != 1:  # no row to update: take the new rows back too, then say so
            meta = type(objs[0])._meta
            quote = connection.ops.quote_name
            with connection.cursor() as cursor:
                cursor.execute(
                    f"DELETE FROM {quote(meta.db_table)} WHERE {quote(str(meta.pk.column))} = ANY(%s)",
                    [[row[0] for row in rows]],
                )
            raise _missing(obj)
        inserted(objs, [row[0] for row in rows])

    execute_then(
        f"WITH updated AS ({update} RETURNING 1) {insert.sql}, (SELECT count(*) FROM updated)",
        [*_update_params(obj, update_fields), *insert_params(objs, insert)],
        then,
    )


class _Writes:
    """The closing writes of one service transaction, sent to PostgreSQL together (`pipelined_writes`)."""

    def __init__(self) -> None:
        self.collecting = False
        self.pending: list[tuple[str, list[Any], Callable[[list[tuple[Any, ...]]], None]]] = []

    @contextmanager
    def from_here(self) -> Iterator[None]:
        """Innermost: when the body ends normally, the batches' writes (their exits) are collected."""
        yield
        self.collecting = True


_writes: ContextVar[_Writes | None] = ContextVar("pipelined_writes", default=None)


class _Joined:
    @contextmanager
    def from_here(self) -> Iterator[None]:
        yield


@contextmanager
def pipelined_writes() -> Iterator[_Writes | _Joined]:
    """Send the writes that batches make as they close in one round trip (PostgreSQL's pipeline mode).

    A service transaction ends with a write of its timeline rows, one of its events and one of its
    audit records, each a statement that waited for its answer before the next went out. Open this
    right inside the transaction and outside the batches, and its `from_here()` innermost::

        with transaction.atomic(), pipelined_writes() as writes, audit_batch(), ..., writes.from_here():

    Statements sent through `execute_then` while the batches close are then collected, and sent
    together when this block ends, still inside the transaction and in the same order; PostgreSQL runs
    them one after another as before (the lock order stays), and each caller's `then` gets its rows,
    in order, before the commit. An error is raised as the ORM raises it (a deadlock is an
    OperationalError, which `retry_on_deadlock` retries), and the later `then`s are not called.
    Statements run in the body are not collected: a write the body needs before a read goes out at once.
    Nested blocks join the outermost. Elsewhere than on PostgreSQL, nothing is collected.
    """
    if _writes.get() is not None or connection.vendor != "postgresql":
        yield _Joined()
        return
    writes = _Writes()
    token = _writes.set(writes)
    try:
        yield writes
    finally:
        _writes.reset(token)
    if writes.pending:  # reached only when the block ended normally
        _send_together(writes.pending)


def _send_together(pending: list[tuple[str, list[Any], Callable[[list[tuple[Any, ...]]], None]]]) -> None:
    if len(pending) == 1:
        sql, params, then = pending[0]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        then(rows)
        return
    cursors = []
    try:
        with connection.wrap_database_errors, connection.connection.pipeline():
            for sql, params, _then in pending:
                cursor = connection.cursor()
                cursors.append(cursor)
                cursor.execute(sql, params)
        # The pipeline is synced as its block ends: every statement's rows are in its cursor.
        results = [cursor.fetchall() for cursor in cursors]
    finally:
        for cursor in cursors:
            cursor.close()
    for (_sql, _params, then), rows in zip(pending, results, strict=True):
        then(rows)


def execute_then(sql: str, params: list[Any], then: Callable[[list[tuple[Any, ...]]], None]) -> None:
    """Run a statement and pass its rows to `then` (PostgreSQL); collected if a pipelined batch is closing."""
    writes = _writes.get()
    if writes is not None and writes.collecting:
        writes.pending.append((sql, params, then))
        return
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    then(rows)


@contextmanager
def planned_per_call() -> Iterator[None]:
    """Statements run inside are planned for their values each time, never as a prepared generic plan.

    For a query whose best plan depends on its values: the duplicate search's box and point ordered by
    the GiST index ran 0.3 ms with a plan for its values, 8.5 ms with the generic plan PostgreSQL chose
    once psycopg had prepared it (DB_PREPARED_STATEMENTS, prepared on the fifth run).
    """
    if connection.vendor == "postgresql":
        connection.ensure_connection()  # the setting lives on the driver's connection
    raw = getattr(connection, "connection", None)
    if connection.vendor != "postgresql" or raw is None or not hasattr(raw, "prepare_threshold"):
        yield
        return
    saved = raw.prepare_threshold
    raw.prepare_threshold = None
    try:
        yield
    finally:
        raw.prepare_threshold = saved
