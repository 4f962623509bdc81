//! What `pitr extract` brings back and under which name: the selection
//! (tables, a schema or a database), its names quoted for SQL and for
//! pg_dump, the renaming done in the scratch copy before the dump, and the
//! checks of the live cluster. Pure: the command runs what this builds.
//!
//! Names are taken as written (case kept, no wildcards): `public.Orders`
//! is the table created as `"Orders"`. pg_dump gets them in double quotes,
//! where its pattern characters match literally.
//!
//! The scratch copy needs only the chosen database: which of the others
//! may be left as sparse files is decided in [`scope`].

pub mod moment;
pub mod report;
pub mod scope;

use std::fmt;

/// A schema-qualified table name.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    /// `SCHEMA.NAME`; the first dot separates them.
    pub fn parse(text: &str) -> Result<TableName, String> {
        match text.split_once('.') {
            Some((schema, name)) if !schema.is_empty() && !name.is_empty() => Ok(TableName {
                schema: schema.to_string(),
                name: name.to_string(),
            }),
            _ => Err(format!(
                "--table `{text}` is not schema-qualified: write SCHEMA.NAME, such as public.{text}"
            )),
        }
    }

    /// `"schema"."name"`, for SQL and for pg_dump's `-t`.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// What is brought back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    Tables {
        database: String,
        tables: Vec<TableName>,
    },
    Schema {
        database: String,
        schema: String,
    },
    Database {
        database: String,
    },
}

/// The database `--table` and `--schema` look in when `--database` is not
/// given (the one every cluster has).
pub const DEFAULT_DATABASE: &str = "postgres";

impl Selection {
    /// From the command line's `--table`, `--schema` and `--database`.
    pub fn from_args(
        tables: &[String],
        schema: Option<&str>,
        database: Option<&str>,
    ) -> Result<Selection, String> {
        let in_database = database.unwrap_or(DEFAULT_DATABASE).to_string();
        match (tables.is_empty(), schema) {
            (false, Some(_)) => Err("--table and --schema select differently: give one".into()),
            (false, None) => {
                let mut parsed = Vec::new();
                for text in tables {
                    let table = TableName::parse(text)?;
                    if !parsed.contains(&table) {
                        parsed.push(table);
                    }
                }
                Ok(Selection::Tables {
                    database: in_database,
                    tables: parsed,
                })
            }
            (true, Some(schema)) => Ok(Selection::Schema {
                database: in_database,
                schema: schema.to_string(),
            }),
            (true, None) => match database {
                Some(database) => Ok(Selection::Database {
                    database: database.to_string(),
                }),
                None => Err("nothing to extract: give --table, --schema or --database".into()),
            },
        }
    }

    /// The database of the scratch copy the selection is dumped from.
    pub fn database(&self) -> &str {
        match self {
            Selection::Tables { database, .. }
            | Selection::Schema { database, .. }
            | Selection::Database { database } => database,
        }
    }

    /// pg_dump's options that select it (the database is given apart).
    pub fn dump_options(&self) -> Vec<String> {
        match self {
            Selection::Tables { tables, .. } => {
                let mut options = vec!["--strict-names".to_string()];
                for table in tables {
                    options.push("-t".into());
                    options.push(table.quoted());
                }
                options
            }
            Selection::Schema { schema, .. } => {
                vec!["--strict-names".into(), "-n".into(), quote_ident(schema)]
            }
            Selection::Database { .. } => Vec::new(),
        }
    }

    /// What it is, for people: `table public.orders`, `schema billing`.
    pub fn describe(&self) -> String {
        match self {
            Selection::Tables { tables, database } => format!(
                "{} {} (database {database})",
                if tables.len() == 1 { "table" } else { "tables" },
                tables
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Selection::Schema { schema, database } => {
                format!("schema {schema} (database {database})")
            }
            Selection::Database { database } => format!("database {database}"),
        }
    }

    /// The selection as it will be named where it goes: with `--as`, the
    /// one table, schema or database renamed.
    pub fn renamed(&self, new_name: Option<&str>) -> Result<Selection, String> {
        let Some(new_name) = new_name else {
            return Ok(self.clone());
        };
        if new_name.is_empty() {
            return Err("--as needs a name".into());
        }
        Ok(match self {
            Selection::Tables { database, tables } => {
                let [table] = tables.as_slice() else {
                    return Err("--as renames one table: give a single --table".into());
                };
                if new_name.contains('.') {
                    return Err(format!(
                        "--as `{new_name}`: give the new table name alone; it stays in schema `{}`",
                        table.schema
                    ));
                }
                Selection::Tables {
                    database: database.clone(),
                    tables: vec![TableName {
                        schema: table.schema.clone(),
                        name: new_name.to_string(),
                    }],
                }
            }
            Selection::Schema { database, .. } => Selection::Schema {
                database: database.clone(),
                schema: new_name.to_string(),
            },
            Selection::Database { .. } => Selection::Database {
                database: new_name.to_string(),
            },
        })
    }
}

/// An SQL identifier in double quotes.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An SQL string literal (standard_conforming_strings, on since 9.1).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A query answering `t` when the selection's name is taken in the live
/// cluster (run in its database for tables and schemas; in any database
/// for a database).
pub fn exists_query(selection: &Selection) -> String {
    match selection {
        Selection::Tables { tables, .. } => {
            let checks: Vec<String> = tables
                .iter()
                .map(|table| {
                    format!(
                        "SELECT {} WHERE EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = {} AND c.relname = {})",
                        quote_literal(&table.to_string()),
                        quote_literal(&table.schema),
                        quote_literal(&table.name)
                    )
                })
                .collect();
            checks.join(" UNION ALL ")
        }
        Selection::Schema { schema, .. } => format!(
            "SELECT nspname FROM pg_namespace WHERE nspname = {}",
            quote_literal(schema)
        ),
        Selection::Database { database } => format!(
            "SELECT datname FROM pg_database WHERE datname = {}",
            quote_literal(database)
        ),
    }
}

/// SQL run in the scratch copy that renames the table, and the names
/// derived from it that would collide in the live cluster where the
/// original still exists: its indexes (and the constraints they back) and
/// the sequences it owns. A derived name that starts with the old table
/// name gets the new one instead (`orders_pkey` → `orders_restored_pkey`);
/// others get the new name as a prefix.
pub fn rename_table_sql(table: &TableName, new_name: &str) -> String {
    let old = quote_literal(&table.name);
    let new = quote_literal(new_name);
    let qualified = quote_literal(&table.quoted());
    format!(
        r#"DO $pitr$
DECLARE
  tab regclass := {qualified}::regclass;
  old_name text := {old};
  new_name text := {new};
  obj record;
  renamed text;
BEGIN
  FOR obj IN
    SELECT c.relname, c.relkind, n.nspname, con.conname
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_constraint con ON con.conindid = c.oid AND con.conrelid = tab
    WHERE c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = tab)
       OR c.oid IN (SELECT objid FROM pg_depend WHERE refobjid = tab AND classid = 'pg_class'::regclass AND deptype IN ('a', 'i') AND objid IN (SELECT oid FROM pg_class WHERE relkind = 'S'))
  LOOP
    renamed := CASE WHEN left(obj.relname, length(old_name)) = old_name
                    THEN new_name || substr(obj.relname, length(old_name) + 1)
                    ELSE new_name || '_' || obj.relname END;
    IF obj.conname IS NOT NULL THEN
      EXECUTE format('ALTER TABLE %s RENAME CONSTRAINT %I TO %I', tab, obj.conname, renamed);
    ELSIF obj.relkind = 'S' THEN
      EXECUTE format('ALTER SEQUENCE %I.%I RENAME TO %I', obj.nspname, obj.relname, renamed);
    ELSE
      EXECUTE format('ALTER INDEX %I.%I RENAME TO %I', obj.nspname, obj.relname, renamed);
    END IF;
  END LOOP;
  EXECUTE format('ALTER TABLE %s RENAME TO %I', tab, new_name);
END
$pitr$;"#
    )
}

/// SQL that lists the tables of the selection in the copy with their
/// exact row counts, one `schema.name|rows` per line.
pub fn row_counts_sql(tables: &[TableName]) -> String {
    if tables.is_empty() {
        return "SELECT 'none', 0 WHERE false".to_string();
    }
    tables
        .iter()
        .map(|table| {
            format!(
                "SELECT {}, count(*) FROM {}",
                quote_literal(&table.to_string()),
                table.quoted()
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// SQL that lists the ordinary and partitioned tables of a schema (or of
/// every user schema), one `schema|name` per line.
pub fn list_tables_sql(schema: Option<&str>) -> String {
    let filter = match schema {
        Some(schema) => format!("n.nspname = {}", quote_literal(schema)),
        None => "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'".to_string(),
    };
    format!(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND {filter} ORDER BY 1, 2"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_from_the_command_line() {
        let tables = vec!["public.orders".to_string(), "public.orders".to_string()];
        assert_eq!(
            Selection::from_args(&tables, None, None),
            Ok(Selection::Tables {
                database: "postgres".into(),
                tables: vec![TableName {
                    schema: "public".into(),
                    name: "orders".into()
                }]
            })
        );
        assert!(Selection::from_args(&["orders".into()], None, None)
            .unwrap_err()
            .contains("public.orders"));
        assert!(Selection::from_args(&tables, Some("s"), None).is_err());
        assert!(Selection::from_args(&[], None, None).is_err());
        assert_eq!(
            Selection::from_args(&[], None, Some("shop")),
            Ok(Selection::Database {
                database: "shop".into()
            })
        );
    }

    #[test]
    fn names_are_quoted_as_written() {
        let table = TableName::parse("my\"s.Or.ders").unwrap();
        assert_eq!(table.quoted(), r#""my""s"."Or.ders""#);
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn renaming_keeps_the_schema_and_needs_one_table() {
        let one = Selection::from_args(&["s.t".into()], None, Some("db")).unwrap();
        assert_eq!(
            one.renamed(Some("t2")).unwrap().describe(),
            "table s.t2 (database db)"
        );
        assert!(one.renamed(Some("x.t2")).is_err());
        let two = Selection::from_args(&["s.t".into(), "s.u".into()], None, None).unwrap();
        assert!(two.renamed(Some("t2")).is_err());
        assert_eq!(two.renamed(None).unwrap(), two);
    }
}
