"""Named revision ids of the inventory example project (``migrations/versions``).

The history has 14 revisions and a single head::

    users -> products -> orders -> orders.status -------------------> merge
                 |          :                                          ^
                 |          : depends_on                               |
                 |          v                                          |
                 +-> report_runs -> order_reports ---------------------+
                     ("reporting" branch)

    merge -> ix_users_name -> users.email -> drop products.legacy_flag -> shipments
          -> mark new orders pending -> shipments.tracking_code -> audit_notes (head)
"""

from __future__ import annotations

from typing import Final

CREATE_USERS: Final = "3f9c1a7e2b10"
CREATE_PRODUCTS: Final = "8d41e6b07c22"
CREATE_ORDERS: Final = "c5e2a9174f03"
CREATE_REPORT_RUNS: Final = "5b7d0e3a91c4"  # first revision of the "reporting" branch
CREATE_ORDER_REPORTS: Final = "e07a4c6d2b85"  # depends_on CREATE_ORDERS (cross-branch)
ADD_ORDERS_STATUS: Final = "71c3f8a5d096"
MERGE_REPORTING: Final = "a4d96b2e1f37"
INDEX_USERS_NAME: Final = "2e8b5f0c7a48"
ADD_USERS_EMAIL: Final = "9f1a3d7c4e59"
DROP_PRODUCTS_LEGACY_FLAG: Final = "d6c0b8e2f16a"
CREATE_SHIPMENTS: Final = "4a7e9c1b3d7b"
MARK_NEW_ORDERS_PENDING: Final = "b83f2d6a0e8c"
ADD_SHIPMENTS_TRACKING_CODE: Final = "0c5a7e4f9b9d"
CREATE_AUDIT_NOTES: Final = "f2b6d1a8c3ae"

#: Every revision, parents before children (the order ``upgrade head`` may apply them in).
ALL_REVISIONS: Final[list[str]] = [
    CREATE_USERS,
    CREATE_PRODUCTS,
    CREATE_ORDERS,
    CREATE_REPORT_RUNS,
    CREATE_ORDER_REPORTS,
    ADD_ORDERS_STATUS,
    MERGE_REPORTING,
    INDEX_USERS_NAME,
    ADD_USERS_EMAIL,
    DROP_PRODUCTS_LEGACY_FLAG,
    CREATE_SHIPMENTS,
    MARK_NEW_ORDERS_PENDING,
    ADD_SHIPMENTS_TRACKING_CODE,
    CREATE_AUDIT_NOTES,
]

#: The single head.
HEAD: Final = CREATE_AUDIT_NOTES

#: Suggested per-environment targets for seeding: dev at head, staging 3 behind, prod 6 behind.
DEV_TARGET: Final = CREATE_AUDIT_NOTES
STAGING_TARGET: Final = CREATE_SHIPMENTS
PROD_TARGET: Final = INDEX_USERS_NAME

#: Revisions with something special about them.
DROP_COLUMN_REVISION: Final = DROP_PRODUCTS_LEGACY_FLAG
DOWNGRADE_PASS_REVISION: Final = MARK_NEW_ORDERS_PENDING
MERGE_REVISION: Final = MERGE_REPORTING
BRANCH_LABEL: Final = "reporting"
BRANCH_REVISIONS: Final[list[str]] = [CREATE_REPORT_RUNS, CREATE_ORDER_REPORTS]
DEPENDS_ON_REVISION: Final = CREATE_ORDER_REPORTS
DEPENDS_ON_TARGET: Final = CREATE_ORDERS
