"""Random schemas for the drift tests and benchmark: SQLAlchemy metadata with every kind of
object schema comparison reads, reproducible from a seed."""

from __future__ import annotations

import random

import sqlalchemy as sa

_TYPES = [
    lambda r: sa.Integer(),
    lambda r: sa.BigInteger(),
    lambda r: sa.String(r.choice([20, 64, 255])),
    lambda r: sa.Text(),
    lambda r: sa.Boolean(),
    lambda r: sa.Numeric(r.choice([10, 12]), r.choice([2, 4])),
    lambda r: sa.DateTime(),
    lambda r: sa.Date(),
]
_DEFAULTS = {
    "Integer": ["0", "42"],
    "BigInteger": ["0"],
    "String": ["'pending'", "''"],
    "Boolean": ["false", "true"],
    "DateTime": ["CURRENT_TIMESTAMP"],
}


def random_metadata(seed: int, tables: int | None = None) -> sa.MetaData:
    """Tables with every kind of object the comparison reads: typed columns with and without
    defaults, indexes (plain, unique, multi-column), unique and check constraints, foreign keys
    with ON DELETE. `tables` tables, or 2 to 6 chosen by the seed."""
    rnd = random.Random(seed)
    metadata = sa.MetaData()
    made: list[sa.Table] = []
    for t in range(tables if tables is not None else rnd.randint(2, 6)):
        columns: list[sa.Column] = [sa.Column("id", sa.Integer, primary_key=True)]
        for c in range(rnd.randint(1, 6)):
            type_ = rnd.choice(_TYPES)(rnd)
            options = _DEFAULTS.get(type(type_).__name__, [])
            default = sa.text(rnd.choice(options)) if options and rnd.random() < 0.4 else None
            columns.append(
                sa.Column(f"c{c}", type_, nullable=rnd.random() < 0.5, server_default=default)
            )
        if made and rnd.random() < 0.6:
            parent = rnd.choice(made)
            columns.append(
                sa.Column(
                    "parent_id",
                    sa.Integer,
                    sa.ForeignKey(f"{parent.name}.id", ondelete=rnd.choice([None, "CASCADE"])),
                )
            )
        table = sa.Table(f"t{seed}_{t}", metadata, *columns)
        data = [c for c in table.columns if c.name.startswith("c")]
        if data and rnd.random() < 0.7:
            picked = rnd.sample(data, k=min(len(data), rnd.randint(1, 2)))
            sa.Index(None, *picked, unique=rnd.random() < 0.3, _table=table)
        if len(data) >= 2 and rnd.random() < 0.4:
            table.append_constraint(sa.UniqueConstraint(data[0], data[1]))
        numbers = [c for c in data if isinstance(c.type, sa.Integer)]
        if numbers and rnd.random() < 0.5:
            table.append_constraint(sa.CheckConstraint(f"{numbers[0].name} >= 0"))
        made.append(table)
    metadata.naming_convention = {"ix": "ix_%(table_name)s_%(column_0_N_name)s"}
    return metadata
