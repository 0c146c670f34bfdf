// Users and tokens.
import { Type } from 'typebox';
import { Password, SCHEMA_NAME, StringEnum, Username } from './common.js';

export const Credentials = Type.Object({ username: Username, password: Password }, { additionalProperties: false, [SCHEMA_NAME]: 'Credentials' });

export const PasswordChange = Type.Object(
  { password: Type.String({ maxLength: 256, description: 'The current password.' }), newPassword: Password },
  { additionalProperties: false, [SCHEMA_NAME]: 'PasswordChange' },
);

export const PasswordConfirmation = Type.Object(
  { password: Type.String({ maxLength: 256, description: 'The current password.' }) },
  { additionalProperties: false, [SCHEMA_NAME]: 'PasswordConfirmation' },
);

export const Registered = Type.Object({ username: Type.String(), createdAt: Type.String({ format: 'date-time' }) }, { [SCHEMA_NAME]: 'User' });

export const Token = Type.Object(
  {
    accessToken: Type.String({ description: 'A JWT (HS256); send it as Authorization: Bearer <token> to any node.' }),
    tokenType: StringEnum(['Bearer']),
    expiresIn: Type.Integer({ description: 'Seconds until the token expires.' }),
  },
  { [SCHEMA_NAME]: 'Token' },
);

export const Me = Type.Object({ username: Type.String() }, { [SCHEMA_NAME]: 'CurrentUser' });
